"""Run the benchmarks and write the results: ``uv run --group bench python -m bench``.

Writes ``bench/results/latest.json`` (every figure, for comparing runs), PNG plots in
``docs/img/`` and the tables between the ``bench:begin``/``bench:end`` markers of
``docs/benchmarks.md``. Kafka and MongoDB come from ``PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS``
and ``PASS_STATUS_MONGODB_URI`` (start local ones with ``scripts/services up``).

Stages (``--only``, in this order): ``ticket_used``, ``sweeps``, ``store_ops``, ``profile``.
The results file is written after every stage (and every sweep size), with how long each
stage took. ``--resume`` keeps what a previous, interrupted run of the results file already
measured and runs only the rest; ``--only`` re-runs the named stages and keeps the others
from the file. ``--preset smoke|medium`` picks small sizes (functionality, not figures).
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
from consumer.redact import redact_uri
from pymongo.errors import PyMongoError

from bench import profiling, store_ops, sweeps, ticket_used
from bench.common import REPO, Endpoints, endpoints_from_env, mongo_client, server_pids

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x)


def _fractions(text: str) -> tuple[float, ...]:
    values = tuple(float(x) for x in text.split(",") if x)
    if not values or any(not 0 < v <= 2 for v in values):
        raise argparse.ArgumentTypeError(f"fractions in (0, 2] expected, not {text!r}")
    return values


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


STAGES = ("ticket_used", "sweeps", "store_ops", "profile")

# Sizes other than the (the defaults): `smoke` proves the harness end to end in a
# couple of minutes, `medium` gives figures at 10,000 users in about a quarter of an hour.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "users": 2_000,
        "events": 2_000,
        "saturation_rate": 100,
        "rate_seconds": 3.0,
        "max_drain_seconds": 60.0,
        "sizes": (1_000, 3_000),
        "store_sizes": (1_000, 3_000),
    },
    "medium": {
        "users": 10_000,
        "events": 20_000,
        "rate_seconds": 2.0,
        "max_drain_seconds": 120.0,
        "sizes": (1_000, 10_000),
        "store_sizes": (1_000, 10_000),
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), help="small sizes (see bench/run.py)")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--distributions", default="uniform,zipf")
    p.add_argument(
        "--pipelines",
        default="service,naive,passthrough",
        help="also service-cN: the consumer with PASS_STATUS_USER_CONCURRENCY=N",
    )
    p.add_argument(
        "--latency-fractions",
        type=_fractions,
        default=ticket_used.FRACTIONS,
        help="offered rates, as fractions of the service's sustained (uniform drain) events/s",
    )
    p.add_argument(
        "--saturation-rate",
        type=int,
        default=1000,
        help="a fixed offered rate (events/s), reported with lag growth and peak RSS",
    )
    p.add_argument("--rate-seconds", type=float, default=10.0, help="seconds each rate is offered")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--max-drain-seconds", type=float, default=180.0)
    p.add_argument("--sizes", type=_ints, default=(10_000, 100_000, 1_000_000))
    p.add_argument(
        "--store-sizes",
        type=_ints,
        default=(1_000, 10_000, 100_000),
        help="collection sizes for the per-operation costs (bench/store_ops.py)",
    )
    p.add_argument(
        "--only", type=_stages, default=STAGES, help="comma-separated stages: " + ",".join(STAGES)
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the stages (and sweep sizes) the results file already has; run the rest",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the profiled drain")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "latest.json")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-doc", action="store_true", help="write JSON only (no plots, no doc)")
    p.add_argument(
        "--from-json", type=Path, help="measure nothing: redo plots and doc from a results file"
    )
    args = p.parse_args(argv)
    if args.preset:
        given = set(argv if argv is not None else sys.argv[1:])
        for key, value in PRESETS[args.preset].items():
            if "--" + key.replace("_", "-") not in given:
                setattr(args, key, value)
    return args


def _stages(text: str) -> tuple[str, ...]:
    names = tuple(x for x in text.split(",") if x)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage {unknown[0]!r} (stages: {STAGES})")
    return names


def config_of(args: argparse.Namespace) -> ticket_used.Config:
    return ticket_used.Config(
        users=args.users,
        events=args.events,
        distributions=tuple(d for d in args.distributions.split(",") if d),
        pipelines=tuple(p for p in args.pipelines.split(",") if p),
        latency_fractions=tuple(args.latency_fractions),
        saturation_rate=args.saturation_rate,
        rate_seconds=args.rate_seconds,
        rounds=args.rounds,
        partitions=args.partitions,
        max_drain_seconds=args.max_drain_seconds,
    )


def _previous(args: argparse.Namespace) -> dict[str, Any]:
    """The results file's figures, when this run keeps some of them."""
    partial = args.resume or tuple(args.only) != STAGES
    if partial and args.output.exists():
        previous: dict[str, Any] = orjson.loads(args.output.read_bytes())
        return previous
    return {}


async def run_all(args: argparse.Namespace, ep: Endpoints) -> dict[str, Any]:
    started = time.perf_counter()
    results = _previous(args)
    stages: dict[str, Any] = results.setdefault("stages", {})
    now = datetime.now(UTC).isoformat(timespec="seconds")
    command = "python -m bench " + shlex.join(sys.argv[1:])
    # Every invocation that wrote into this results file (--resume, --only), in order.
    results.setdefault("invocations", []).append({"command": command, "started_at": now})
    results.update(
        {
            "started_at": results.get("started_at", now) if results.get("stages") else now,
            "command": command,
            "machine": machine(),
            "store": await describe_store(ep),
        }
    )
    cfg = config_of(args)
    wanted = [s for s in args.only if not (s == "profile" and args.no_profile)]
    for stage in STAGES:
        if stage not in wanted:
            continue
        if args.resume and stages.get(stage, {}).get("complete"):
            print(f"{stage}: kept from {args.output}")
            continue
        print(f"{stage} ({datetime.now(UTC):%H:%M:%S} UTC)")
        began = time.perf_counter()
        stages[stage] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds")}
        await _run_stage(stage, args, ep, cfg, results)
        stages[stage].update({"seconds": round(time.perf_counter() - began, 1), "complete": True})
        print(f"{stage}: {stages[stage]['seconds']} s")
        _save(args.output, results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


async def _run_stage(
    stage: str,
    args: argparse.Namespace,
    ep: Endpoints,
    cfg: ticket_used.Config,
    results: dict[str, Any],
) -> None:
    if stage == "ticket_used":
        results["ticket_used"] = await ticket_used.run(ep, cfg)
    elif stage == "sweeps":
        done = results.get("sweeps", []) if args.resume else []

        def save(rows: list[dict[str, Any]]) -> None:
            results["sweeps"] = rows
            _save(args.output, results)

        results["sweeps"] = await sweeps.run(ep, args.sizes, done=done, save=save)
    elif stage == "store_ops":
        results["store_ops"] = await store_ops.run(ep.mongodb_uri, args.store_sizes, repeat=5)
    elif stage == "profile":
        out = args.output.parent / "profile.txt"
        drain = await ticket_used.profile(ep, cfg, str(out))
        results["profile"] = {
            "file": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
            "drain": dataclasses.asdict(drain),
            "summary": profiling.summarize(out.read_text()) if out.exists() else {},
        }


async def describe_store(ep: Endpoints) -> dict[str, Any]:
    """What answers at the MongoDB URI: server and version (FerretDB says so)."""
    client = mongo_client(ep.mongodb_uri)
    try:
        info = await client.admin.command("buildInfo")
    except PyMongoError as exc:
        return {"error": str(exc)[:200]}
    finally:
        await client.close()
    ferret = info.get("ferretdbVersion")
    pids = server_pids(ep)
    return {
        "server": f"FerretDB {ferret}" if ferret else f"MongoDB {info.get('version', '?')}",
        "version": info.get("version"),
        "uri": redact_uri(ep.mongodb_uri),
        "pids": pids,
        # a local Go server's collector setting moved its CPU per event by 22 %
        "gogc": _environ_of(pids.get("store")).get("GOGC"),
    }


def _environ_of(pid: int | None) -> dict[str, str]:
    """A local process's environment (empty when not local or not readable)."""
    if pid is None:
        return {}
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )


def write_doc(doc: Path, results: dict[str, Any]) -> None:
    """Replace the generated section of ``doc`` (between the markers) with fresh tables."""
    from bench import report  # noqa: PLC0415 - matplotlib: only the bench group has it

    if not doc.exists():
        return
    text = doc.read_text()
    m = results["machine"]
    runs = results.get("invocations") or [
        {"command": results["command"], "started_at": results["started_at"]}
    ]
    by = "; then ".join(f"`{r['command']}` at {r['started_at']}" for r in runs)
    body = (
        f"{BEGIN}\n_Generated by {by}, on {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['memory_gb']} GB._\n\n"
        f"{report.tables(results)}\n{END}"
    )
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        doc.write_text(pattern.sub(lambda _m: body, text))


def main(argv: list[str] | None = None) -> int:
    from bench import report  # noqa: PLC0415 - matplotlib: only the bench group has it

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
