"""Valkey settings: FF_VALKEY_URL or FF_HOST/FF_PORT/FF_TLS, FF_CLUSTER; errors name them."""

import pytest
from flowfabric_valkey import ValkeyBackend
from flowfabric_valkey.settings import ValkeySettings, settings_from

from appliance.backend.plugins import get_plugin_manager
from appliance.config import load_config
from appliance.core.errors import StartupError


def settings(**env: str) -> ValkeySettings:
    return settings_from(load_config({"FF_BACKEND": "valkey", **env}))


def test_default_is_the_local_server_database_0():
    assert settings() == ValkeySettings(host="127.0.0.1", port=6379, db=0)


def test_url_gives_host_port_database_and_credentials():
    got = settings(FF_VALKEY_URL="redis://app:s3cret@cache.internal:7000/3")
    assert (got.host, got.port, got.db, got.username, got.password) == (
        "cache.internal", 7000, 3, "app", "s3cret")


@pytest.mark.parametrize("url", ["rediss://h:6380/0", "valkeys://h:6380/0"])
def test_tls_schemes_turn_tls_on(url):
    assert settings(FF_VALKEY_URL=url).tls


@pytest.mark.parametrize("env", [{"FF_CLUSTER": "true"},
                                 {"FF_VALKEY_URL": "redis://h:7000?cluster=true"}])
def test_cluster_mode_from_the_flag_or_the_url(env):
    assert settings(**env).cluster


def test_host_port_and_tls_variables_build_the_address():
    got = settings(FF_HOST="10.1.2.3", FF_PORT="6390", FF_TLS="1")
    assert (got.host, got.port, got.tls) == ("10.1.2.3", 6390, True)


def test_describe_never_shows_the_password():
    backend = ValkeyBackend(settings(FF_VALKEY_URL="redis://app:s3cret@h:7000/2"))
    assert backend.describe() == "valkey redis://h:7000/2"


@pytest.mark.parametrize("env, named", [
    ({"FF_VALKEY_URL": "http://h:6379"}, "FF_VALKEY_URL"),
    ({"FF_VALKEY_URL": "redis://h:notaport/0"}, "FF_VALKEY_URL"),
    ({"FF_VALKEY_URL": "redis://h:6379/zero"}, "FF_VALKEY_URL"),
    ({"FF_VALKEY_URL": "redis://h:6379/0?colour=blue"}, "FF_VALKEY_URL"),
    ({"FF_VALKEY_URL": "redis://h:6379/2", "FF_CLUSTER": "true"}, "FF_VALKEY_URL"),
    ({"FF_PORT": "99999"}, "FF_PORT"),
    ({"FF_PORT": "six"}, "FF_PORT"),
    ({"FF_CLUSTER": "maybe"}, "FF_CLUSTER"),
    ({"FF_TLS": "maybe"}, "FF_TLS"),
    ({"FF_VALKEY_URL": "redis://h:6379/0", "FF_HOST": "other"}, "FF_HOST"),
])
def test_bad_settings_refuse_to_start_naming_the_variable(env, named):
    config = load_config({"FF_BACKEND": "valkey", **env})
    with pytest.raises(StartupError, match=named):
        get_plugin_manager().make_backend("valkey", config)
