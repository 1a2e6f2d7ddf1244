"""The README's curl walk-through runs as written against a fresh appliance."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.serve_process import port_is_free

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough(marker: str = "<!-- walkthrough -->") -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(marker) + r"[^\n]*\n```sh\n(.*?)\n```", text, re.DOTALL)
    assert match, f"README.md has no ```sh block right after a {marker} line"
    return match.group(1)


def run_against_fresh_appliance(launch, tmp_path, script: str) -> str:
    """Its stdout, once it ran to the end against an appliance on the README's port."""
    for tool in ("curl", "jq", "base64"):
        if shutil.which(tool) is None:
            pytest.skip(f"the walk-through needs {tool}")
    if not port_is_free("127.0.0.1", 9090):
        pytest.skip("127.0.0.1:9090 is in use on this machine")
    app = launch(["serve", "--listen", "127.0.0.1:9090"])
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=False,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nappliance log:\n{app.log}"
    return run.stdout


def test_readme_walkthrough_completes_and_prints_the_result(launch, tmp_path):
    stdout = run_against_fresh_appliance(launch, tmp_path, walkthrough())
    assert stdout.rstrip().endswith("hello, world"), stdout
    assert '"completed"' in stdout


def test_readme_flow_walkthrough_runs_join_last_with_part_a_output(launch, tmp_path):
    stdout = run_against_fresh_appliance(launch, tmp_path,
                                         walkthrough("<!-- flow-walkthrough -->"))
    running = [line for line in stdout.splitlines() if line.startswith("running")]
    assert running[0] == "running split, input: ", stdout
    assert sorted(running[1:3]) == ["running part-a, input: ", "running part-b, input: "]
    assert running[3] == "running join, input: output of part-a", stdout
    assert stdout.rstrip().endswith('{"state":"completed","counts":{"completed":4}}'), stdout


def test_readme_approval_walkthrough_resumes_with_the_signal(launch, tmp_path):
    stdout = run_against_fresh_appliance(launch, tmp_path,
                                         walkthrough("<!-- approval-walkthrough -->"))
    lines = stdout.splitlines()
    assert lines[0] == 'state: "suspended"', stdout
    assert lines[1] == ('{"waitpoint_key":"approval","state":"active",'
                        '"required_signal_names":["approved"]}'), stdout
    assert lines[2] == '"resume_condition_satisfied"', stdout
    assert lines[3] == "resumed=true attempt=0 by jane: ship it", stdout
    assert lines[4] == 'state: "completed"', stdout


def test_readme_limits_walkthrough_routes_by_capability_and_spends_the_budget(launch, tmp_path):
    stdout = run_against_fresh_appliance(launch, tmp_path,
                                         walkthrough("<!-- limits-walkthrough -->"))
    lines = stdout.splitlines()
    assert lines[0].startswith('{"Created":{"budget_id"'), stdout
    assert lines[1].startswith('{"Created":{"quota_policy_id"'), stdout
    assert lines[2] == "cpu worker got: resize", stdout
    assert lines[3] == "no_capable_worker", stdout
    assert lines[4] == "gpu worker got: render", stdout
    assert lines[5] == ('{"SoftBreach":{"dimension":"tokens","current_usage":90,'
                        '"soft_limit":80}}'), stdout
    assert lines[6] == ('[{"worker_instance_id":"cpu-1","active_leases":1},'
                        '{"worker_instance_id":"gpu-1","active_leases":1}]'), stdout
    assert lines[7] == '{"usage":{"tokens":90},"breached":false}', stdout


def test_readme_streams_walkthrough_follows_tails_and_summarizes_the_output(launch, tmp_path):
    stdout = run_against_fresh_appliance(launch, tmp_path,
                                         walkthrough("<!-- streams-walkthrough -->"))
    assert stdout.splitlines() == [
        '{"count":2,"frame_count":2}',
        '["step 2 of 2"]',
        '{"document":{"pages":12,"status":"done","words":250},"version":2}',
        "step 1 of 2",
        "fetched 12 pages",
        "step 2 of 2",
        '{"pages": 12, "status": "summarizing"}',
        '{"status": "done", "words": 250}',
        "closed: attempt_success",
    ], stdout
