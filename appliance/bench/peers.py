"""The peer queues (``shared/peers``): the run that matches a scenario and backend, in the
same session, so a ratio means something on a shared, noisy machine."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: backend → (system, runner, arguments) of the best peer measured on this machine.
MATCHING = {
    "sqlite": ("dbos", "run_dbos.py", ["--backend", "sqlite", "--processes", "1",
                                       "--concurrency", "16"]),
    "valkey": ("huey", "run_huey.py", ["--processes", "2", "--concurrency", "8"]),
    "postgres": ("pgqueuer", "run_pgqueuer.py", ["--processes", "1", "--concurrency", "16"]),
}
TIMEOUT_S = 150


@dataclass
class PeerResult:
    system: str
    backend: str
    throughput_per_s: float | None
    p50_ms: float | None
    notes: str


def find_peers(given: str | None) -> Path:
    """The peers folder: ``--peers-dir``, ``FF_BENCH_PEERS_DIR``, or ``../shared/peers``."""
    candidates = [given, os.environ.get("FF_BENCH_PEERS_DIR"),
                  str(Path.cwd().parent / "shared" / "peers")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "peerlib.py").is_file():
            return Path(candidate)
    raise RuntimeError("no peers harness found: give --peers-dir (the folder holding "
                       "peerlib.py and run_*.py) or set FF_BENCH_PEERS_DIR")


def peer_python(peers: Path) -> str:
    python = os.environ.get("FF_BENCH_PEERS_PYTHON", "/tmp/peers-venv/bin/python")
    if not Path(python).is_file():
        raise RuntimeError(f"no peers virtualenv at {python}: set it up as {peers}/README.md "
                           f"says, or set FF_BENCH_PEERS_PYTHON")
    return python


def run_peer(backend: str, peers: Path, scenario: str = "S1-e2e",
             n: int = 5000) -> PeerResult:
    system, runner, args = MATCHING[backend]
    logs = tempfile.mkdtemp(prefix="ffbench-peers-")
    env = {**os.environ, "PEERS_PIDFILE": f"{logs}/pids", "PEERS_LOGDIR": logs,
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(["timeout", "-s", "TERM", "-k", "10", str(TIMEOUT_S),
                           peer_python(peers), runner, "--scenario", scenario, "--n", str(n),
                           *args], cwd=peers, env=env, capture_output=True, text=True,
                          check=False)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if not records:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return PeerResult(system, backend, None, None, f"FAILED: {tail}")
    record = records[-1]
    return PeerResult(system, record.get("backend", backend), record.get("throughput_per_s"),
                      record.get("p50_ms"), record.get("notes", ""))
