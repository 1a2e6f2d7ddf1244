"""Boot: partition counts are fixed by the first boot, and the function library is (re)loaded."""

import pytest
import trio_asyncio
from backend_setups.valkey import redis_cli
from flowfabric_valkey import LIBRARY_VERSION
from flowfabric_valkey.library import versioned_source

from appliance.backend import BackendEnv
from appliance.backend.plugins import get_plugin_manager
from appliance.config import load_config
from appliance.core.errors import StartupError
from appliance.testing import open_harness


async def boot(options: dict[str, str]) -> None:
    """Prepare and close a backend, as an appliance start would."""
    config = load_config({"FF_BACKEND": "valkey", **options})
    backend = get_plugin_manager().make_backend("valkey", config)
    await backend.prepare(BackendEnv(config.partitions, config.clock, config.retention_ms))
    await backend.close()


async def test_first_boot_records_the_partition_counts(valkey_backend_options, valkey_server):
    async with open_harness("valkey", {**valkey_backend_options, "FF_FLOW_PARTITIONS": "64"}):
        pass
    stored = redis_cli(valkey_server.port, "HGETALL", "ff:{cfg}:config").split("\n")
    assert dict(zip(stored[::2], stored[1::2], strict=True)) == {
        "num_flow_partitions": "64", "num_budget_partitions": "32", "num_quota_partitions": "32"}


async def test_other_partition_counts_are_refused(valkey_backend_options):
    async with trio_asyncio.open_loop():
        await boot(valkey_backend_options)
        with pytest.raises(StartupError) as refused:
            await boot({**valkey_backend_options, "FF_FLOW_PARTITIONS": "128"})
    message = str(refused.value)
    assert "partition_mismatch" in message and "FF_FLOW_PARTITIONS" in message
    assert "stored=256, config=128" in message


async def test_same_partition_counts_boot_again(valkey_backend_options):
    for _ in range(2):
        async with open_harness("valkey", valkey_backend_options) as ff:
            await ff.create()


def test_library_declares_the_version_python_expects():
    source, version = versioned_source()
    assert source.startswith("#!lua name=flowfabric\n")
    assert f"local LIBRARY_VERSION = '{LIBRARY_VERSION}'" in source
    assert version.startswith(LIBRARY_VERSION + ".") and version.split(".")[1] in source


async def test_a_library_of_other_source_is_replaced_at_boot(own_server):
    stale = ("#!lua name=flowfabric\n"
             f"redis.register_function('ff_version', function() return '{LIBRARY_VERSION}' end)")
    redis_cli(own_server.port, "FUNCTION", "LOAD", stale)
    async with open_harness("valkey", {"FF_VALKEY_URL": own_server.url}) as ff:
        assert await ff.create()
    assert redis_cli(own_server.port, "FCALL", "ff_version", "0") == versioned_source()[1]


async def test_a_flushed_library_is_reloaded_by_the_next_operation(valkey_backend_options,
                                                                    valkey_server):
    async with open_harness("valkey", valkey_backend_options) as ff:
        eid = await ff.create()
        assert redis_cli(valkey_server.port, "FUNCTION", "FLUSH") == "OK"
        task = await ff.claim()
        assert task["execution_id"] == eid
        assert (await ff.worker_op("complete", task)).status == 200
    assert redis_cli(valkey_server.port, "FCALL", "ff_version", "0") == versioned_source()[1]


async def test_an_unreachable_store_refuses_to_start_naming_the_setting(own_server):
    url = own_server.url
    own_server.stop()
    async with trio_asyncio.open_loop():
        with pytest.raises(StartupError, match="FF_VALKEY_URL"):
            await boot({"FF_VALKEY_URL": url})
