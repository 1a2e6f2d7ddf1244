"""`flowfabric serve` as a process: startup, refusals and signal-driven shutdown."""

from __future__ import annotations

import signal

import httpx
import pytest
import trio
from support.serve_process import port_is_free

pytestmark = pytest.mark.e2e

IDLE_CLAIM = {"lane_id": "idle", "worker_instance_id": "w1-a", "wait_ms": 20000}


async def test_bare_command_listens_on_9090_and_keeps_its_store_in_cwd(launch, client,
                                                                       tmp_path):
    if not port_is_free("127.0.0.1", 9090):
        pytest.skip("127.0.0.1:9090 is in use on this machine")
    app = launch([])
    assert app.url == "http://127.0.0.1:9090"
    assert (await client.get(f"{app.url}/healthz")).status_code == 200
    assert (tmp_path / "flowfabric.db").is_file()


def test_startup_log_names_backend_store_address_partitions_and_scanners(launch, tmp_path):
    app = launch(env={"FF_RETENTION_TRIMMER_INTERVAL_S": "0"})
    app.wait_for_log("scanners:")
    log = app.log
    assert f"listening on {app.url}" in log
    assert "backend sqlite" in log
    assert str(tmp_path / "flowfabric.db") in log
    assert "flow=256 budget=32 quota=32" in log
    for scanner in ("lease_expiry", "delayed_promoter", "attempt_timeout", "execution_deadline"):
        assert scanner in log
    assert "retention_trimmer" not in log


def test_invalid_setting_exits_1_naming_the_variable(launch):
    app = launch(env={"FF_FLOW_PARTITIONS": "0"}, wait=False)
    assert app.wait_exit() == 1
    assert "FF_FLOW_PARTITIONS" in app.log


def test_non_loopback_listen_without_token_exits_1_asking_for_a_token(launch):
    app = launch(["serve", "--listen", "0.0.0.0:0"], wait=False)
    assert app.wait_exit() == 1
    assert "FF_API_TOKEN" in app.log


def test_second_appliance_on_the_same_store_is_refused(launch):
    launch()
    second = launch(wait=False)
    assert second.wait_exit() == 1
    assert "another FlowFabric appliance" in second.log


async def open_long_poll(client, app, nursery, outcome: dict) -> None:
    """Start an idle claim-task long poll; return once it is sent and a later request answered."""
    sent = trio.Event()

    async def trace(name: str, info: dict) -> None:
        if name == "http11.send_request_body.complete":
            sent.set()

    async def poll() -> None:
        start = trio.current_time()
        try:
            reply = await client.post(f"{app.url}/v1/workers/w1/claim-task", json=IDLE_CLAIM,
                                      extensions={"trace": trace})
            outcome["status"] = reply.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = trio.current_time() - start

    nursery.start_soon(poll)
    with trio.fail_after(5):
        await sent.wait()
    assert (await client.get(f"{app.url}/healthz")).status_code == 200


async def test_sigterm_lets_an_open_long_poll_return_then_exits_0(launch, client):
    app = launch()
    outcome: dict = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await open_long_poll(client, app, nursery, outcome)
            app.signal(signal.SIGTERM)
        assert await app.wait_exit_async(5) == 0
    assert outcome.get("status") == 204, outcome
    assert outcome["elapsed"] < 5


async def test_second_sigterm_exits_at_once(launch, client):
    app = launch()
    outcome: dict = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await open_long_poll(client, app, nursery, outcome)
            app.signal(signal.SIGTERM)
            await app.wait_for_log_async("SIGTERM received")
            app.signal(signal.SIGTERM)
            code = await app.wait_exit_async(5)
    assert code in (0, 3), app.log
    assert outcome["elapsed"] < 5
