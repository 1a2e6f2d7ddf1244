"""``flowfabric bench``: each scenario runs end to end on each backend and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BACKENDS = ["sqlite", "valkey", "postgres"]


def bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    admin = os.environ.get("FF_TEST_POSTGRES_ADMIN_URL")
    extra = ["--postgres-url", admin] if admin else []
    done = subprocess.run([sys.executable, "-m", "appliance", "bench", *args, *extra,
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return done, json.loads(out.read_text())


@pytest.mark.parametrize("backend", BACKENDS)
def test_s1_both_modes_reports_every_task_done(tmp_path, backend):
    done, report = bench(tmp_path, "s1", "--backend", backend, "--mode", "both",
                         "--tasks", "200", "--workers", "4", "--batch", "16")
    runs = {(r["mode"], r["shape"]): r for r in report["runs"]}
    assert set(runs) == {("batch", "split"), ("single", "split")}
    for run in runs.values():
        assert run["tasks"] == 200 and run["throughput_per_s"] > 0
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        assert run["server_cpu_us_per_task"] > 0
    assert runs[("batch", "split")]["requests"] < runs[("single", "split")]["requests"]
    assert "| batch | split |" in done.stdout  # the table a user reads


def test_latency_and_s3_run(tmp_path):
    _, report = bench(tmp_path, "latency")
    assert report["runs"][0]["latency_ms"]["p50"] > 0
    _, report = bench(tmp_path, "s3", "--rate", "50", "--duration", "2", "--workers", "2")
    assert report["runs"][0]["tasks"] > 0


def test_two_processes_are_benched_and_their_cpu_counted(tmp_path):
    _, report = bench(tmp_path, "s1", "--backend", "valkey", "--processes", "2",
                      "--tasks", "200", "--workers", "4")
    assert report["runs"][0]["server_cpu_us_per_task"] > 0
