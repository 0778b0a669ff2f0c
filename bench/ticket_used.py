"""Ticket-used benchmark: throughput at saturation and latency at fixed offered rates.

Three pipelines, alternating within each round: ``service`` (``python -m consumer run``),
``naive`` and ``passthrough`` (:mod:`bench.baselines`). Each pipeline of a round gets a
freshly seeded database of ``users`` users with 3 USABLE passes each:

- throughput, one run per distribution: ``events`` ticket-used events are produced first
  (to one topic per round and distribution, read by each pipeline with its own group);
  distribution ``uniform`` uses pass 0 of a uniformly drawn user, ``zipf`` pass 1 of a
  Zipf(s)-drawn user. The drain is timed from the pipeline's partition assignment to the
  moment its group's committed offsets reach the end of the topic (every pipeline commits
  only after its outputs are acknowledged). ``max_drain_seconds`` caps a slow drain; the
  rate is then the events committed within the cap.
- latency: a paced producer offers each rate for ``rate_seconds``; every event uses pass 2
  of a distinct user, so each yields exactly one output. Latency = Kafka timestamp of the
  output - Kafka timestamp of the input, matched by (user_id, pass_uuid).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from consumer.domain.times import format_instant

from bench.common import (
    Endpoints,
    Names,
    Pipeline,
    committed_total,
    cpu_snapshot,
    create_topics,
    delete_topics,
    drop_database,
    pass_uuid,
    percentile,
    proc_status_kb,
    produce_all,
    produce_paced,
    prometheus_sum,
    python_module,
    read_all,
    seed_users,
    unique_prefix,
)

PIPELINES = ("service", "naive", "passthrough")
DISTRIBUTIONS = ("uniform", "zipf")


@dataclass(frozen=True, slots=True)
class Config:
    users: int = 100_000
    events: int = 200_000
    distributions: tuple[str, ...] = DISTRIBUTIONS
    zipf_s: float = 1.1
    rates: tuple[int, ...] = (500, 1000, 2000)
    rate_seconds: float = 10.0
    rounds: int = 1
    partitions: int = 6
    max_drain_seconds: float = 180.0
    latency_drain_seconds: float = 30.0
    pipelines: tuple[str, ...] = PIPELINES
    seed: int = 7


@dataclass(slots=True)
class Drain:
    round: int
    distribution: str
    pipeline: str
    events: int
    processed: int
    seconds: float
    events_per_second: float
    capped: bool
    peak_rss_mb: float
    cpu_percent: dict[str, float] = field(default_factory=dict)
    transient_faults: int = 0
    # MongoDB data commands (round trips) per event processed: the service's own count
    # (pass_status_mongodb_commands_total), or naive's.
    store_ops_per_event: float | None = None


# The commands that read or write data (not the driver's handshakes and pings).
DATA_COMMANDS = ("find", "getMore", "update", "insert", "delete", "aggregate", "count")


@dataclass(slots=True)
class Latency:
    round: int
    pipeline: str
    offered_rate: int
    achieved_rate: float
    sent: int
    received: int
    drained: bool
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def _event(user_id: int, index: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user_id,
        "pass_uuid": pass_uuid(user_id, index),
        "used_at": format_instant(datetime.now(UTC)),
    }


def draw_users(
    distribution: str, users: int, count: int, rng: random.Random, s: float
) -> list[int]:
    if distribution == "uniform":
        return [rng.randint(1, users) for _ in range(count)]
    cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, users + 1)))
    # Rank k is a random user id, so hot users are spread over partitions.
    ids = list(range(1, users + 1))
    rng.shuffle(ids)
    return [ids[k] for k in rng.choices(range(users), cum_weights=cum, k=count)]


def _extra_env(pipeline: str) -> dict[str, str]:
    """``service-cN``: the consumer with ``PASS_STATUS_USER_CONCURRENCY=N``."""
    if pipeline.startswith("service-c"):
        return {"user_concurrency": pipeline.removeprefix("service-c")}
    return {}


def _argv(pipeline: str) -> list[str]:
    if pipeline.startswith("service"):
        return python_module("consumer", "run")
    return python_module("bench.baselines", pipeline)


async def _wait_committed(
    admin: Any, group: str, topic: str, target: int, deadline: float
) -> tuple[int, float]:
    """Poll the group's committed total until ``target`` or ``deadline``; (committed, when)."""
    while True:
        done = await committed_total(admin, group, topic)
        now = time.time()
        if done >= target or time.monotonic() >= deadline:
            return done, now
        await asyncio.sleep(0.1)


async def _drain(
    ep: Endpoints,
    cfg: Config,
    rnd: int,
    dist: str,
    pipeline: str,
    database: str,
    topic: str,
    argv: list[str] | None = None,
) -> Drain:
    names = Names.of(unique_prefix(pipeline[:4]), ticket_used=topic)
    await create_topics(ep.bootstrap, names.outputs, cfg.partitions)
    env = names.env(ep, mongodb_database=database, **_extra_env(pipeline))
    proc = Pipeline(pipeline, argv or _argv(pipeline), env)
    admin = AIOKafkaAdminClient(bootstrap_servers=ep.bootstrap)
    await admin.start()
    try:
        await asyncio.to_thread(proc.start)
        started = proc.seen["partitions_assigned"][0]
        cpu0 = cpu_snapshot(proc.pid, ep)
        done, ended = await _wait_committed(
            admin,
            names.prefix,
            topic,
            cfg.events,
            time.monotonic() + cfg.max_drain_seconds,
        )
        cpu1 = cpu_snapshot(proc.pid, ep)
        rss = proc_status_kb(proc.pid, "VmHWM") / 1024
        processed = done
        store_ops: float | None = None
        if pipeline.startswith("service"):
            metrics = await asyncio.to_thread(proc.metrics_text)
            processed = int(prometheus_sum(metrics, "pass_status_events_consumed_total"))
            store_ops = sum(
                prometheus_sum(metrics, f'pass_status_mongodb_commands_total{{command="{name}"}}')
                for name in DATA_COMMANDS
            )
    finally:
        await asyncio.to_thread(proc.stop)
        await admin.close()
        await delete_topics(ep.bootstrap, names.outputs)
    if not pipeline.startswith("service"):
        summary = proc.seen.get("pipeline_done", (0.0, {"processed": done}))[1]
        processed = int(summary["processed"])
        store_ops = summary.get("store_ops")
    seconds = max(1e-6, ended - started)
    return Drain(
        rnd,
        dist,
        pipeline,
        cfg.events,
        processed,
        round(seconds, 3),
        round(done / seconds, 1),
        done < cfg.events,
        round(rss, 1),
        {k: round(100 * (cpu1[k] - cpu0.get(k, 0.0)) / seconds, 1) for k in cpu1},
        proc.transient_faults,
        None if store_ops is None else round(store_ops / max(1, processed), 2),
    )


async def _latency(
    ep: Endpoints, cfg: Config, rnd: int, pipeline: str, database: str, user_ids: list[int]
) -> tuple[list[Latency], float]:
    names = Names.of(unique_prefix(pipeline[:4]))
    await create_topics(ep.bootstrap, [names.ticket_used, *names.outputs], cfg.partitions)
    proc = Pipeline(
        pipeline, _argv(pipeline), names.env(ep, mongodb_database=database, **_extra_env(pipeline))
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=ep.bootstrap)
    await admin.start()
    results: list[Latency] = []
    phases: list[tuple[int, float, list[dict[str, Any]], bool]] = []
    try:
        await asyncio.to_thread(proc.start)
        sent = 0
        cursor = 0
        for rate in cfg.rates:
            count = int(rate * cfg.rate_seconds)
            events = [_event(u, 2) for u in user_ids[cursor : cursor + count]]
            cursor += count
            _elapsed, achieved = await produce_paced(ep.bootstrap, names.ticket_used, events, rate)
            sent += len(events)
            done, _ = await _wait_committed(
                admin,
                names.prefix,
                names.ticket_used,
                sent,
                time.monotonic() + cfg.latency_drain_seconds,
            )
            drained = done >= sent
            phases.append((rate, achieved, events, drained))
            if not drained:
                break  # saturated: higher rates would only measure the backlog
        rss = proc_status_kb(proc.pid, "VmHWM") / 1024
        inputs = await read_all(ep.bootstrap, names.ticket_used, expect=sent, wait=30)
        outputs = await read_all(ep.bootstrap, names.status_changed, expect=sent, wait=5)
    finally:
        await asyncio.to_thread(proc.stop)
        await admin.close()
        await delete_topics(ep.bootstrap, [names.ticket_used, *names.outputs])
    sent_at: dict[tuple[int, str], int] = {}
    for r in inputs:
        body = orjson.loads(r.value)
        sent_at[(body["user_id"], body["pass_uuid"])] = r.timestamp
    seen_at: dict[tuple[int, str], int] = {}
    for r in outputs:
        body = orjson.loads(r.value)
        seen_at.setdefault((body["user_id"], body["pass_uuid"]), r.timestamp)
    for rate, achieved, events, drained in phases:
        lat = [
            float(seen_at[key] - sent_at[key])
            for key in ((e["user_id"], e["pass_uuid"]) for e in events)
            if key in seen_at and key in sent_at
        ]
        results.append(
            Latency(
                rnd,
                pipeline,
                rate,
                round(achieved, 1),
                len(events),
                len(lat),
                drained,
                percentile(lat, 50),
                percentile(lat, 95),
                percentile(lat, 99),
                max(lat) if lat else float("nan"),
            )
        )
    return results, round(rss, 1)


async def run(ep: Endpoints, cfg: Config, say: Any = print) -> dict[str, Any]:
    """All rounds; returns the JSON-able results."""
    rng = random.Random(cfg.seed)
    latency_users = sum(int(r * cfg.rate_seconds) for r in cfg.rates)
    if latency_users > cfg.users:
        raise ValueError(f"latency phase needs {latency_users} users, only {cfg.users} seeded")
    drains: list[Drain] = []
    latencies: list[Latency] = []
    seeding: list[dict[str, Any]] = []
    latency_rss: dict[str, float] = {}
    for rnd in range(1, cfg.rounds + 1):
        topics: dict[str, str] = {}
        for index, dist in enumerate(cfg.distributions):
            topic = f"{unique_prefix('in')}.ticket-used"
            await create_topics(ep.bootstrap, [topic], cfg.partitions)
            users = draw_users(dist, cfg.users, cfg.events, rng, cfg.zipf_s)
            # uniform: pass 0, zipf: pass 1 (pass 2 is kept fresh for the latency phase)
            secs = await produce_all(ep.bootstrap, topic, (_event(u, index % 2) for u in users))
            say(f"  produced {cfg.events} {dist} events in {secs:.1f}s")
            topics[dist] = topic
        latency_ids = rng.sample(range(1, cfg.users + 1), latency_users)
        for pipeline in cfg.pipelines:
            database = unique_prefix(f"db_{pipeline[:4]}")
            try:
                if pipeline != "passthrough":
                    seeded = await seed_users(ep.mongodb_uri, database, cfg.users)
                    seeding.append({"pipeline": pipeline, **seeded.as_dict()})
                    say(f"  seeded {cfg.users} users for {pipeline}: {seeded.as_dict()}")
                for dist in cfg.distributions:
                    drain = await _drain(ep, cfg, rnd, dist, pipeline, database, topics[dist])
                    drains.append(drain)
                    say(f"  round {rnd} {dist:8} {pipeline:12} {_show(drain)}")
                lat, rss = await _latency(ep, cfg, rnd, pipeline, database, latency_ids)
                latency_rss[pipeline] = max(rss, latency_rss.get(pipeline, 0.0))
                for item in lat:
                    latencies.append(item)
                    say(
                        f"  round {rnd} latency {pipeline:12} {item.offered_rate:5}/s: "
                        f"p50 {item.p50_ms:.0f} p95 {item.p95_ms:.0f} p99 {item.p99_ms:.0f} ms"
                        f" ({item.received}/{item.sent}{'' if item.drained else ', saturated'})"
                    )
            finally:
                if pipeline != "passthrough":
                    await drop_database(ep.mongodb_uri, database)
        await delete_topics(ep.bootstrap, list(topics.values()))
    return {
        "config": asdict(cfg),
        "throughput": [asdict(d) for d in drains],
        "latency": [asdict(item) for item in latencies],
        "latency_peak_rss_mb": latency_rss,
        "seeding": seeding,
        "summary": summarize(drains, latencies),
    }


async def profile(ep: Endpoints, cfg: Config, output: str, say: Any = print) -> Drain:
    """One service drain (uniform) under pyinstrument; the text profile goes to ``output``."""
    rng = random.Random(cfg.seed)
    topic = f"{unique_prefix('in')}.ticket-used"
    await create_topics(ep.bootstrap, [topic], cfg.partitions)
    users = draw_users("uniform", cfg.users, cfg.events, rng, cfg.zipf_s)
    await produce_all(ep.bootstrap, topic, (_event(u, 0) for u in users))
    database = unique_prefix("db_prof")
    argv = python_module("pyinstrument", "-r", "text", "-o", output, "-m", "consumer", "run")
    try:
        await seed_users(ep.mongodb_uri, database, cfg.users)
        drain = await _drain(ep, cfg, 0, "uniform", "service", database, topic, argv)
    finally:
        await drop_database(ep.mongodb_uri, database)
        await delete_topics(ep.bootstrap, [topic])
    say(f"  profiled service drain: {_show(drain)}")
    return drain


def _show(d: Drain) -> str:
    cpu = " ".join(f"{k} {v:.0f}%" for k, v in d.cpu_percent.items())
    capped = f", {d.transient_faults} transient faults" if d.transient_faults else ""
    capped += f" (capped: {d.processed} of {d.events})" if d.capped else ""
    return (
        f"{d.events_per_second:8.0f} ev/s in {d.seconds:6.1f}s, "
        f"RSS {d.peak_rss_mb:.0f} MB, CPU {cpu}{capped}"
    )


def _best(drains: Sequence[Drain], pipeline: str, dist: str) -> float:
    rates = [
        d.events_per_second for d in drains if d.pipeline == pipeline and d.distribution == dist
    ]
    return sorted(rates)[len(rates) // 2] if rates else float("nan")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or not b:
        return None
    return round(a / b, 3)


def summarize(drains: Sequence[Drain], latencies: Sequence[Latency]) -> dict[str, Any]:
    """Median events/s per pipeline and distribution, and the ratios of the goals."""
    out: dict[str, Any] = {"events_per_second": {}, "ratios": {}}
    for dist in sorted({d.distribution for d in drains}):
        rates = {p: _best(drains, p, dist) for p in sorted({d.pipeline for d in drains})}
        out["events_per_second"][dist] = rates
        out["ratios"][dist] = {
            f"{p}/{base}": _ratio(rates.get(p), rates.get(base))
            for p in rates
            if p.startswith("service")
            for base in ("naive", "passthrough")
        }
    service_rss = [d.peak_rss_mb for d in drains if d.pipeline == "service"]
    out["service_peak_rss_mb"] = max(service_rss) if service_rss else None
    p99 = [x.p99_ms for x in latencies if x.pipeline == "service" and x.offered_rate == 1000]
    out["service_p99_ms_at_1000"] = max(p99) if p99 else None
    return out
