"""``flowfabric bench``: throughput and latency of an appliance, against the peer queues.

    flowfabric bench s1 --backend sqlite --mode both --compare peers
    flowfabric bench s3 --backend postgres --rate 300 --duration 20
    flowfabric bench latency --url http://127.0.0.1:9090

Without ``--url`` each run starts a fresh appliance on a fresh store of ``--backend``
(a private redis-server for valkey, a new database for postgres) and stops it after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from appliance import __version__

from . import peers, scenarios, target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", choices=["s1", "s3", "latency"])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "valkey", "postgres"])
    parser.add_argument("--url", help="bench a running appliance instead of starting one")
    parser.add_argument("--token", default=os.environ.get("FF_API_TOKEN"),
                        help="Bearer token of the appliance (env FF_API_TOKEN)")
    parser.add_argument("--mode", default="batch", choices=["batch", "single", "both"],
                        help="S1: batches of --batch items per request, or one per request")
    parser.add_argument("--shape", default="split", choices=["split", "inline", "both"],
                        help="S1: one producer + workers, or every worker creates its own")
    parser.add_argument("--processes", type=int, default=1,
                        help="appliance processes (serve --processes; valkey, postgres)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--payload-bytes", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0, help="S3: creates per second")
    parser.add_argument("--duration", type=float, default=20.0, help="S3: seconds")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, interleaving the peers")
    parser.add_argument("--compare", choices=["peers"], help="also run the matching peer queue")
    parser.add_argument("--peers-dir", help="the peers harness (FF_BENCH_PEERS_DIR)")
    parser.add_argument("--valkey-url", help="use this Valkey/Redis instead of a private one")
    parser.add_argument("--postgres-url", help="an admin URL of the PostgreSQL server to "
                        "create the bench database on (default postgres@127.0.0.1:5432)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    runs = [(m, s) for m in (["batch", "single"] if args.mode == "both" else [args.mode])
            for s in (["split", "inline"] if args.shape == "both" else [args.shape])]
    if args.scenario != "s1":
        runs = [("single", "-")]
    results: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    peers_dir = peers.find_peers(args.peers_dir) if args.compare else None
    for round_no in range(1, args.rounds + 1):
        for mode, shape in runs:
            with _target(args) as t:
                result = trio.run(_one, args, t, mode, shape)
            row = result.as_dict() | {"round": round_no}
            results.append(row)
            print(_line(row), flush=True)
        if peers_dir is not None and args.scenario == "s1":
            peer = peers.run_peer(args.backend, peers_dir, n=args.tasks)
            row = {"round": round_no, **peer.__dict__}
            compared.append(row)
            print(f"  peer {peer.system} ({peer.backend}): "
                  f"{_num(peer.throughput_per_s)} tasks/s  {peer.notes[:80]}", flush=True)
    report = _report(args, results, compared)
    print(_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


@contextmanager
def _target(args: argparse.Namespace) -> Any:
    if args.url:
        yield target.Target(args.url.rstrip("/"), args.backend, notes=["external appliance"])
        return
    with target.started(args.backend, valkey_url=args.valkey_url,
                        postgres_url=args.postgres_url, processes=args.processes) as t:
        yield t


async def _one(args: argparse.Namespace, t: target.Target, mode: str,
               shape: str) -> scenarios.Result:
    if args.scenario == "s1":
        return await scenarios.s1(t, tasks=args.tasks, workers=args.workers, batch=args.batch,
                                  mode=mode, shape=shape, payload_bytes=args.payload_bytes,
                                  token=args.token)
    if args.scenario == "s3":
        return await scenarios.s3(t, rate=args.rate, duration_s=args.duration,
                                  workers=args.workers, payload_bytes=args.payload_bytes,
                                  token=args.token)
    return await scenarios.latency(t, token=args.token)


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _line(row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    return (f"{row['scenario']} {row['backend']} {row['mode']}/{row['shape']}: "
            f"{_num(row['throughput_per_s'])} tasks/s, p50 {_num(lat['p50'], 1)} ms, "
            f"p99 {_num(lat['p99'], 1)} ms, server {_num(row['server_cpu_us_per_task'])} "
            f"µs/task, client {_num(row['client_cpu_us_per_task'])} µs/task")


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _report(args: argparse.Namespace, results: list[dict[str, Any]],
            compared: list[dict[str, Any]]) -> dict[str, Any]:
    peer = _median([p["throughput_per_s"] for p in compared])
    summary = []
    for mode, shape in sorted({(r["mode"], r["shape"]) for r in results}):
        rows = [r for r in results if (r["mode"], r["shape"]) == (mode, shape)]
        ours = _median([r["throughput_per_s"] for r in rows])
        summary.append({
            "mode": mode, "shape": shape, "throughput_per_s": ours,
            "p50_ms": _median([r["latency_ms"]["p50"] for r in rows]),
            "p99_ms": _median([r["latency_ms"]["p99"] for r in rows]),
            "server_cpu_us_per_task": _median([r["server_cpu_us_per_task"] for r in rows]),
            "client_cpu_us_per_task": _median([r["client_cpu_us_per_task"] for r in rows]),
            "peer": compared[0]["system"] if compared else None,
            "peer_throughput_per_s": peer,
            "ratio": round(ours / peer, 3) if ours and peer else None})
    return {"scenario": args.scenario, "backend": args.backend, "version": __version__,
            "commit": _commit(), "timestamp_utc": datetime.now(UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "config": {k: v for k, v in vars(args).items() if k not in ("token", "func")},
            "summary": summary, "runs": results, "peers": compared}


def _table(report: dict[str, Any]) -> str:
    title = (f"\n{report['scenario'].upper()} on {report['backend']} "
             f"(median of {report['config']['rounds']} round(s))")
    header = ("| mode | shape | tasks/s | p50 ms | p99 ms | server µs/task | client µs/task "
              "| peer tasks/s | ratio |")
    lines = [title, header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report["summary"]:
        peer = f"{s['peer']} {_num(s['peer_throughput_per_s'])}" if s["peer"] else "–"
        ratio = f"{s['ratio']:.2f}×" if s["ratio"] else "–"
        lines.append(f"| {s['mode']} | {s['shape']} | {_num(s['throughput_per_s'])} | "
                     f"{_num(s['p50_ms'], 1)} | {_num(s['p99_ms'], 1)} | "
                     f"{_num(s['server_cpu_us_per_task'])} | "
                     f"{_num(s['client_cpu_us_per_task'])} | {peer} | {ratio} |")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowfabric bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    try:
        return main(parser.parse_args(argv))
    except RuntimeError as exc:
        print(f"flowfabric bench: error: {exc}", file=sys.stderr)
        return 1
