"""CPU per event of the consumer and of the store, with a py-spy profile of the consumer.

    uv run python -m bench.cpu_profile --users 20000 --events 20000

An operator's sizing run: a backlog of uniform ticket-used events (pass 0 of uniformly
drawn users, each one USABLE -> USING transition) is produced first; the consumer
(``python -m consumer run`` under ``py-spy record --nonblocking``: sampled from outside,
never paused) drains it. CPU is read from ``/proc/<pid>/stat`` (user + system) of the
consumer and of the local store, before and after the drain, so the figures hold on a
machine shared with other work (wall time does not). Writes, under ``bench/results/``:
``flame.svg`` (the flame graph), ``cpu_profile.txt`` (the top of the profile) and
``cpu_profile.json`` (per-event figures and the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from bench import flame
from bench.common import (
    Endpoints,
    Names,
    Pipeline,
    committed_total,
    cpu_seconds,
    create_topics,
    delete_topics,
    drop_database,
    endpoints_from_env,
    produce_all,
    prometheus_sum,
    seed_users,
    server_pids,
    unique_prefix,
)
from bench.drain import DATA_COMMANDS, event
from bench.ticket_used import draw_users

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _child_pid(pid: int, timeout: float = 30) -> int:
    """The process py-spy started (its only child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("py-spy started no consumer")


async def measure(ep: Endpoints, users: int, events: int, rate: int) -> dict[str, Any]:
    rng = random.Random(7)
    topic = f"{unique_prefix('in')}.ticket-used"
    await create_topics(ep.bootstrap, [topic], 6)
    drawn = draw_users("uniform", users, events, rng, 1.1)
    secs = await produce_all(ep.bootstrap, topic, (event(u, 0) for u in drawn))
    print(f"produced {events} events in {secs:.1f}s", file=sys.stderr)
    database = unique_prefix("db_cpu")
    names = Names.of(unique_prefix("cpu"), ticket_used=topic)
    await create_topics(ep.bootstrap, names.outputs, 6)
    raw = RESULTS / "cpu_profile.raw.txt"
    argv = [
        str(Path(sys.executable).parent / "py-spy"),
        *("record", "--nonblocking", "--nolineno", "-r", str(rate), "-f", "raw", "-o", str(raw)),
        *("--", sys.executable, "-m", "consumer", "run"),
    ]
    proc = Pipeline("service", argv, names.env(ep, mongodb_database=database))
    admin = AIOKafkaAdminClient(bootstrap_servers=ep.bootstrap)
    await admin.start()
    try:
        seeded = await seed_users(ep.mongodb_uri, database, users)
        print(f"seeded: {seeded.as_dict()}", file=sys.stderr)
        await asyncio.to_thread(proc.start)
        consumer = _child_pid(proc.pid)
        store = server_pids(ep).get("store")
        c0, s0, t0 = cpu_seconds(consumer), cpu_seconds(store or 0), time.monotonic()
        while (done := await committed_total(admin, names.prefix, topic)) < events:
            if time.monotonic() - t0 > 600:
                break
            await asyncio.sleep(0.1)
        c1, s1, t1 = cpu_seconds(consumer), cpu_seconds(store or 0), time.monotonic()
        metrics = await asyncio.to_thread(proc.metrics_text)
        os.kill(consumer, signal.SIGTERM)  # py-spy writes its file when its child ends
        if proc.proc is not None:
            await asyncio.to_thread(proc.proc.wait, 120)
        await asyncio.to_thread(proc.stop)
    finally:
        await admin.close()
        await delete_topics(ep.bootstrap, [topic, *names.outputs])
        await drop_database(ep.mongodb_uri, database)
    processed = prometheus_sum(metrics, "pass_status_events_consumed_total") or done
    batches = prometheus_sum(metrics, "pass_status_batch_size_events_count")
    commands = {
        name: prometheus_sum(metrics, f'pass_status_mongodb_commands_total{{command="{name}"}}')
        for name in DATA_COMMANDS
    }
    result = {
        "users": users,
        "events": events,
        "processed": processed,
        "seconds": round(t1 - t0, 2),
        "events_per_second": round(done / max(1e-6, t1 - t0), 1),
        "consumer_cpu_ms_per_event": round(1000 * (c1 - c0) / max(1, done), 3),
        "store_cpu_ms_per_event": round(1000 * (s1 - s0) / max(1, done), 3) if store else None,
        "batches": batches,
        "events_per_batch": round(done / max(1, batches), 1),
        "store_commands_per_batch": round(sum(commands.values()) / max(1, batches), 2),
        "store_commands": commands,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(orjson.dumps(result).decode(), file=sys.stderr)
    stacks = flame.parse(raw.read_text().splitlines())
    summary = flame.summarize(stacks)
    title = f"consumer CPU, {events} uniform ticket-used events, {users} users (py-spy {rate} Hz)"
    (RESULTS / "flame.svg").write_text(flame.svg(stacks, title))
    (RESULTS / "cpu_profile.txt").write_text(flame.text_report(summary, title))
    raw.unlink()
    result["profile"] = {k: summary[k] for k in ("samples", "areas")}
    (RESULTS / "cpu_profile.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = p.parse_args(argv)
    result = asyncio.run(measure(endpoints_from_env(), args.users, args.events, args.rate))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
