"""The server version gate: Redis 7.0+ or Valkey 7.2+, read from INFO server."""

import pytest
from flowfabric_valkey.library import check_server_versions, server_identity

from appliance.core.errors import StartupError


@pytest.mark.parametrize("info", [
    {"redis_version": "7.0.0"},
    {"redis_version": "7.2.4"},
    {"redis_version": "7.2.4", "server_name": "valkey"},
    {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.0.1"},
])
def test_supported_servers_are_accepted(info):
    check_server_versions({"node-a": info})


@pytest.mark.parametrize("info, shown", [
    ({"redis_version": "6.2.14"}, "Redis 6.2.14"),
    ({"redis_version": "7.0.15", "server_name": "valkey"}, "Valkey 7.0.15"),
])
def test_older_servers_are_refused_naming_both_minimums(info, shown):
    with pytest.raises(StartupError) as refused:
        check_server_versions({"node-a": info})
    message = str(refused.value)
    assert shown in message and "node-a" in message
    assert "Redis 7.0" in message and "Valkey 7.2" in message


def test_one_old_node_in_a_cluster_refuses_the_whole_boot():
    with pytest.raises(StartupError, match="node-b runs Redis 6.2.0"):
        check_server_versions({"node-a": {"redis_version": "7.2.0"},
                               "node-b": {"redis_version": "6.2.0"}})


def test_valkey_version_wins_over_the_compatibility_redis_version():
    info = {"redis_version": "7.2.4", "valkey_version": "8.1.0", "server_name": "valkey"}
    assert server_identity(info) == ("Valkey", "8.1.0")
