"""The single executable: same CLI and defaults, all three backends, third-party plugins."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from support.serve_process import port_is_free

BROKEN = Path(__file__).parents[1] / "fixtures" / "broken_plugins"
EPHEMERAL = ("serve", "--listen", "127.0.0.1:0")


def lifecycle(url: str) -> None:
    """create → claim-task → complete → result, as a user would."""
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post("/v1/executions", json={"input_payload_b64": "aGk="})
        assert created.status_code == 201, created.text
        eid = created.json()["Created"]["execution_id"]
        task = http.post("/v1/workers/w/claim-task",
                         json={"lane_id": "default", "worker_instance_id": "w-1"}).json()
        assert (task["execution_id"], task["input_payload_b64"]) == (eid, "aGk=")
        done = http.post(f"/v1/executions/{quote(eid, safe='')}/complete",
                         json={"handle": task["handle"], "result_b64": "b2s="})
        assert done.status_code == 200, done.text
        assert http.get(f"/v1/executions/{quote(eid, safe='')}/result").content == b"ok"
        flow(http)


def flow(http: httpx.Client) -> None:
    """A two-step flow: the second is released by the first's completion, with its result
    as input (the flow migrations and Lua are in the binary)."""
    reply = http.post("/v1/flows", json={
        "nodes": [{"key": "a", "lane_id": "fa"}, {"key": "b", "lane_id": "fb"}],
        "edges": [{"from": "a", "to": "b", "data_passing_ref": "result"}]})
    assert reply.status_code == 201, reply.text
    flow_id = reply.json()["Created"]["flow_id"]
    for lane, result in (("fa", "cGFzc2Vk"), ("fb", None)):
        task = http.post("/v1/workers/w/claim-task",
                         json={"lane_id": lane, "worker_instance_id": "w-1"}).json()
        if result is None:
            assert task["input_payload_b64"] == "cGFzc2Vk"
        done = http.post(f"/v1/executions/{quote(task['execution_id'], safe='')}/complete",
                         json={"handle": task["handle"], "result_b64": result or ""})
        assert done.status_code == 200, done.text
    assert http.get(f"/v1/flows/{flow_id}").json()["state"] == "completed"


def human_in_the_loop(url: str) -> None:
    """claim → suspend → signal with the waitpoint's token → resumed claim with the signal
    → complete (the suspension migrations, Lua and token keystore are in the binary)."""
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post("/v1/executions", json={"lane_id": "hitl"})
        assert created.status_code == 201, created.text
        eid = quote(created.json()["Created"]["execution_id"], safe="")
        claim = {"lane_id": "hitl", "worker_instance_id": "w-1"}
        task = http.post("/v1/workers/w/claim-task", json=claim).json()
        reply = http.post(f"/v1/executions/{eid}/suspend", json={
            "handle": task["handle"], "resume_condition": {"Single": {
                "waitpoint_key": "approval", "matcher": {"ByName": "approved"}}}})
        assert reply.status_code == 200, reply.text
        [wp] = reply.json()["Suspended"]["waitpoints"]
        reply = http.post(f"/v1/executions/{eid}/signal", json={
            "waitpoint_id": wp["waitpoint_id"], "waitpoint_token": wp["token"],
            "signal_name": "approved", "signal_category": "approval", "source_type": "user",
            "source_identity": "jane", "payload_b64": "AP95ZXM="})
        assert reply.json()["Accepted"]["effect"] == "resume_condition_satisfied", reply.text
        again = http.post("/v1/workers/w/claim-task", json=claim).json()
        assert (again["execution_id"], again["resumed"]) == (task["execution_id"], True)
        assert [s["payload_b64"] for s in again["signals"]] == ["AP95ZXM="]
        done = http.post(f"/v1/executions/{eid}/complete", json={"handle": again["handle"]})
        assert done.status_code == 200, done.text


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def test_version_help_and_plugins_match_the_installed_cli(frozen_binary):
    assert run(frozen_binary, "--version").stdout.strip() == "flowfabric 0.1.0"
    help_text = run(frozen_binary, "--help").stdout
    assert "serve" in help_text and "plugins" in help_text
    listing = run(frozen_binary, "plugins").stdout
    for backend in ("sqlite", "valkey", "postgres"):
        assert f"backends: {backend}  [ok]" in listing


def test_no_arguments_in_an_empty_folder_serves_on_the_embedded_store(run_binary, tmp_path):
    args = () if port_is_free("127.0.0.1", 9090) else EPHEMERAL
    app = run_binary(args)
    if not args:
        assert app.url == "http://127.0.0.1:9090"
    lifecycle(app.url)
    human_in_the_loop(app.url)
    assert (tmp_path / "flowfabric.db").exists()
    assert app.stop() == 0


def test_lifecycle_on_valkey(run_binary, valkey_backend_options):
    app = run_binary(EPHEMERAL, env={"FF_BACKEND": "valkey", **valkey_backend_options})
    lifecycle(app.url)
    human_in_the_loop(app.url)
    assert app.stop() == 0


def test_lifecycle_on_postgres(run_binary, postgres_backend_options):
    app = run_binary(EPHEMERAL, env={"FF_BACKEND": "postgres", **postgres_backend_options})
    lifecycle(app.url)
    human_in_the_loop(app.url)
    assert app.stop() == 0


def test_a_third_party_wheel_on_the_plugin_path_serves(run_binary, example_wheel):
    app = run_binary((*EPHEMERAL, "--backend", "memory", "--plugin-path", str(example_wheel)))
    app.wait_for_log("backend memory")
    lifecycle(app.url)
    assert app.stop() == 0


def test_the_plugin_path_also_comes_from_the_environment(frozen_binary, example_wheel):
    listing = subprocess.run([str(frozen_binary), "plugins"], capture_output=True, text=True,
                             env={"FF_PLUGIN_PATH": str(example_wheel)}, timeout=60)
    assert "backends: memory  [ok]" in listing.stdout
    assert f"in wheel {example_wheel}" in listing.stdout


def test_broken_plugins_are_named_and_a_healthy_backend_still_starts(frozen_binary, run_binary):
    listing = run(frozen_binary, "plugins", "--plugin-path", str(BROKEN)).stdout
    for name in ("ff_broken_import", "ff_bad_signature", "ff_unknown_hook",
                 "ff_duplicate_sqlite"):
        assert f"{name} " in listing and "BROKEN" in listing
    app = run_binary((*EPHEMERAL, "--plugin-path", str(BROKEN)))
    app.wait_for_log("ff_broken_import")  # the warning names the plugin
    lifecycle(app.url)
    assert app.stop() == 0


@pytest.mark.parametrize("backend", ["nope"])
def test_an_unknown_backend_names_the_ones_available(frozen_binary, backend):
    result = run(frozen_binary, "serve", "--backend", backend, "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "unknown backend 'nope'" in result.stderr and "sqlite" in result.stderr
