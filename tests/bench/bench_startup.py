"""How long after launch the appliance answers its first request.

Starts the single binary (``dist/flowfabric``, built by packaging/build.sh) and the
installed package (``python -m appliance``) in a fresh folder, polls ``/healthz`` every
5 ms, and reports the time from ``exec`` to the first 200, over several runs each:

    .venv/bin/python tests/bench/bench_startup.py [--binary dist/flowfabric] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_answer(command: list[str], timeout: float = 20.0) -> float:
    """Seconds from launch to the first 200 from /healthz."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        proc = subprocess.Popen([*command, "serve", "--listen", f"127.0.0.1:{port}"],
                                cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - start < timeout:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                timeout=1) as reply:
                        if reply.status == 200:
                            return time.perf_counter() - start
                except OSError:
                    time.sleep(0.005)
            raise RuntimeError(f"{command} did not answer within {timeout}s")
        finally:
            proc.terminate()
            proc.wait()


def report(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    print(f"{name:<28} runs={len(ms)}  min={ms[0]:.0f} ms  median={statistics.median(ms):.0f} "
          f"ms  max={ms[-1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(ROOT / "dist" / "flowfabric"))
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    targets = {"python -m appliance": [sys.executable, "-m", "appliance"]}
    if Path(args.binary).is_file():
        targets["single binary"] = [args.binary]
    else:
        print(f"no binary at {args.binary}; build it with packaging/build.sh", file=sys.stderr)
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.runs):  # interleaved, so machine noise hits both alike
        for name, command in targets.items():
            samples[name].append(first_answer(command))
    for name, values in samples.items():
        report(name, values)


if __name__ == "__main__":
    main()
