"""Run the benchmarks and write the results: ``uv run --group bench python -m bench``.

Writes ``bench/results/latest.json`` (every figure, for comparing runs), PNG plots in
``docs/img/`` and the tables between the ``bench:begin``/``bench:end`` markers of
``docs/benchmarks.md``. Kafka and MongoDB come from ``PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS``
and ``PASS_STATUS_MONGODB_URI`` (start local ones with ``scripts/services up``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import report, store_ops, sweeps, ticket_used
from bench.common import REPO, Endpoints, endpoints_from_env

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--distributions", default="uniform,zipf")
    p.add_argument(
        "--pipelines",
        default="service,naive,passthrough",
        help="also service-cN: the consumer with PASS_STATUS_USER_CONCURRENCY=N",
    )
    p.add_argument("--rates", type=_ints, default=(500, 1000, 2000))
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--max-drain-seconds", type=float, default=180.0)
    p.add_argument("--sizes", type=_ints, default=(10_000, 100_000, 1_000_000))
    p.add_argument("--skip-ticket-used", action="store_true")
    p.add_argument("--skip-sweeps", action="store_true")
    p.add_argument(
        "--store-sizes",
        type=_ints,
        default=(1_000, 10_000),
        help="collection sizes for the per-operation costs (bench/store_ops.py)",
    )
    p.add_argument("--skip-store-ops", action="store_true")
    p.add_argument("--profile", action="store_true", help="also profile a service drain")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "latest.json")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-doc", action="store_true", help="write JSON only (no plots, no doc)")
    p.add_argument(
        "--from-json", type=Path, help="measure nothing: redo plots and doc from a results file"
    )
    return p.parse_args(argv)


def config_of(args: argparse.Namespace) -> ticket_used.Config:
    return ticket_used.Config(
        users=args.users,
        events=args.events,
        distributions=tuple(d for d in args.distributions.split(",") if d),
        pipelines=tuple(p for p in args.pipelines.split(",") if p),
        rates=tuple(args.rates),
        rate_seconds=args.rate_seconds,
        rounds=args.rounds,
        partitions=args.partitions,
        max_drain_seconds=args.max_drain_seconds,
    )


async def run_all(args: argparse.Namespace, ep: Endpoints) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + shlex.join(sys.argv[1:]),
        "machine": machine(),
    }
    cfg = config_of(args)
    if not args.skip_ticket_used:
        print("ticket-used benchmark")
        results["ticket_used"] = await ticket_used.run(ep, cfg)
        _save(args.output, results)
    if not args.skip_sweeps:
        print("sweep benchmark")
        results["sweeps"] = await sweeps.run(ep, args.sizes)
        _save(args.output, results)
    if not args.skip_store_ops:
        print("store operations")
        results["store_ops"] = await store_ops.run(ep.mongodb_uri, args.store_sizes, repeat=5)
        _save(args.output, results)
    if args.profile:
        print("profile")
        out = args.output.parent / "profile.txt"
        drain = await ticket_used.profile(ep, cfg, str(out))
        results["profile"] = {
            "file": str(out.relative_to(REPO)),
            "drain": dataclasses.asdict(drain),
        }
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )


def write_doc(doc: Path, results: dict[str, Any]) -> None:
    """Replace the generated section of ``doc`` (between the markers) with fresh tables."""
    if not doc.exists():
        return
    text = doc.read_text()
    m = results["machine"]
    body = (
        f"{BEGIN}\n_Generated by `{results['command']}` at {results['started_at']} on "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB; "
        f"took {results.get('seconds', 'n/a')} s._\n\n"
        f"{report.tables(results)}\n{END}"
    )
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        doc.write_text(pattern.sub(lambda _m: body, text))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = orjson.loads(args.from_json.read_bytes())
    else:
        results = asyncio.run(run_all(args, endpoints_from_env()))
        _save(args.output, results)
    print(f"wrote {args.output}")
    if not args.no_doc:
        for path in report.plots(results, args.img_dir):
            print(f"wrote {path}")
        write_doc(args.doc, results)
    print(report.tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
