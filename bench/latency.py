"""Latency against capacity: paced load at fractions of the measured sustained throughput.

The service's sustained throughput is its uniform drain's events/s in the same round
(:mod:`bench.drain`). Each fraction (default 25 %, 50 %, 80 %) becomes an offered rate,
``round(fraction x sustained)``, offered for ``seconds`` by a paced producer to one running
pipeline, lowest first; the passthrough gets the same absolute rates. A fixed saturation
point (default 1,000 events/s) is then offered to a fresh deployment of the same pipeline.
Every event uses pass 2 of a distinct user, so each yields exactly one output; latency =
Kafka timestamp of the output - Kafka timestamp of the input, matched by (user_id,
pass_uuid). Per point: p50/p95/p99/max, whether the backlog drained within
``drain_seconds`` afterwards, the lag growth (events/s by which the uncommitted backlog
grew while the rate was offered), the pipeline's peak RSS so far and the CPU of the
pipeline, store, Kafka and machine over the point (offer and drain); for the service, its
events per batch, store commands per batch and the store's CPU per event over the point
(a small batch costs the store more per event than the sustained rate's large ones).

Before the first point, each deployment is offered ``WARM_UP_SECONDS`` of the first rate
with pass 1 of the same users (not measured): the points measure a running pipeline, not
its first seconds (connections, the relay source's registration, the first scans).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.common import (
    Endpoints,
    Names,
    Pipeline,
    committed_total,
    cpu_snapshot,
    percentile,
    proc_status_kb,
    produce_paced,
    prometheus_sum,
    read_all,
)
from bench.drain import DATA_COMMANDS, deployment, event, wait_committed

WARM_UP_SECONDS = 3.0


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
    kind: str = "fraction"  # "fraction" of the sustained throughput, or "saturation"
    fraction: float | None = None
    sustained_rate: float | None = None
    seconds: float | None = None  # how long the rate was offered
    lag_growth_per_second: float | None = None
    peak_rss_mb: float | None = None
    cpu_percent: dict[str, float] = field(default_factory=dict)
    # the service's, over the point (None for the other pipelines)
    events_per_batch: float | None = None
    store_commands_per_batch: float | None = None
    store_cpu_ms_per_event: float | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """One offered rate: its kind and fraction, and the distinct users of its events."""

    kind: str
    rate: int
    fraction: float | None
    seconds: float
    user_ids: list[int]


def offered_rate(fraction: float, sustained: float) -> int:
    return max(1, round(fraction * sustained))


def plan(
    sustained: float,
    fractions: Sequence[float],
    saturation_rate: int,
    seconds: float,
    user_ids: Sequence[int],
) -> tuple[list[Point], list[Point]]:
    """(the fraction points, the saturation point), each with its own users. If there are
    not enough users for ``seconds`` at every rate, every rate is offered for less time."""
    rates: list[tuple[float | None, int]] = [
        (f, offered_rate(f, sustained)) for f in sorted(fractions)
    ]
    rates.append((None, saturation_rate))
    needed = sum(rate * seconds for _, rate in rates)
    if needed > len(user_ids):
        seconds *= len(user_ids) / needed
    points, cursor = [], 0
    for fraction, rate in rates:
        count = max(1, int(rate * seconds))
        kind = "saturation" if fraction is None else "fraction"
        points.append(
            Point(kind, rate, fraction, round(seconds, 2), list(user_ids[cursor : cursor + count]))
        )
        cursor += count
    return points[:-1], points[-1:]


def _batches(proc: Pipeline) -> tuple[float, float]:
    """The service's (batches, store data commands) so far; zeros for other pipelines."""
    if not proc.name.startswith("service"):
        return 0.0, 0.0
    text = proc.metrics_text()
    commands = sum(
        prometheus_sum(text, f'pass_status_mongodb_commands_total{{command="{name}"}}')
        for name in DATA_COMMANDS
    )
    return prometheus_sum(text, "pass_status_batch_size_events_count"), commands


async def _offer(
    ep: Endpoints, admin: Any, names: Names, point: Point, sent: int, pass_index: int = 2
) -> tuple[list[dict[str, Any]], float, float]:
    """Offer one point's events; (events, achieved rate, lag growth in events/s)."""
    events = [event(u, pass_index) for u in point.user_ids]
    backlog0 = sent - await committed_total(admin, names.prefix, names.ticket_used)
    began = time.monotonic()
    _elapsed, achieved = await produce_paced(ep.bootstrap, names.ticket_used, events, point.rate)
    backlog1 = sent + len(events) - await committed_total(admin, names.prefix, names.ticket_used)
    growth = (backlog1 - backlog0) / max(1e-6, time.monotonic() - began)
    return events, achieved, round(growth, 1)


async def paced(
    ep: Endpoints,
    rnd: int,
    pipeline: str,
    database: str,
    points: Sequence[Point],
    *,
    partitions: int,
    drain_seconds: float,
    sustained: float,
) -> list[Latency]:
    """One deployment of ``pipeline`` offered each point in turn; stops after a point whose
    backlog does not drain (a higher rate would measure only that backlog)."""
    rows: list[tuple[Point, Latency, list[dict[str, Any]]]] = []
    async with deployment(ep, pipeline, database, partitions) as (names, proc, admin):
        sent = await _warm_up(ep, admin, names, points[0]) if points else 0
        for point in points:
            cpu0, t0 = cpu_snapshot(proc.pid, ep), time.monotonic()
            batches0 = await asyncio.to_thread(_batches, proc)
            events, achieved, growth = await _offer(ep, admin, names, point, sent)
            sent += len(events)
            deadline = time.monotonic() + drain_seconds
            done, _ = await wait_committed(admin, names.prefix, names.ticket_used, sent, deadline)
            cpu1, seconds = cpu_snapshot(proc.pid, ep), max(1e-6, time.monotonic() - t0)
            batches1 = await asyncio.to_thread(_batches, proc)
            row = Latency(
                *(rnd, pipeline, point.rate, round(achieved, 1), len(events), 0, done >= sent),
                *(float("nan"),) * 4,
                kind=point.kind,
                fraction=point.fraction,
                sustained_rate=sustained,
                seconds=point.seconds,
                lag_growth_per_second=growth,
                peak_rss_mb=round(proc_status_kb(proc.pid, "VmHWM") / 1024, 1),
                cpu_percent={
                    k: round(100 * (cpu1[k] - cpu0.get(k, 0.0)) / seconds, 1) for k in cpu1
                },
            )
            _per_batch(row, batches1[0] - batches0[0], batches1[1] - batches0[1])
            if "store" in cpu1 and batches1[0] > batches0[0]:
                spent = cpu1["store"] - cpu0.get("store", 0.0)
                row.store_cpu_ms_per_event = round(1000 * spent / max(1, len(events)), 3)
            rows.append((point, row, events))
            if not row.drained:
                break
        inputs = await read_all(ep.bootstrap, names.ticket_used, expect=sent, wait=30)
        outputs = await read_all(ep.bootstrap, names.status_changed, expect=sent, wait=5)
    return [_percentiles(row, events, inputs, outputs) for _, row, events in rows]


async def _warm_up(ep: Endpoints, admin: Any, names: Names, first: Point) -> int:
    """Offer ``WARM_UP_SECONDS`` of the first point's rate (pass 1 of its users: their own
    outputs, never matched with the measured ones) and wait for it; the events sent."""
    count = min(len(first.user_ids), max(1, int(first.rate * WARM_UP_SECONDS)))
    warm = Point(first.kind, first.rate, first.fraction, WARM_UP_SECONDS, first.user_ids[:count])
    await _offer(ep, admin, names, warm, 0, pass_index=1)
    deadline = time.monotonic() + 60
    await wait_committed(admin, names.prefix, names.ticket_used, count, deadline)
    return count


def _per_batch(row: Latency, batches: float, commands: float) -> None:
    if batches > 0:
        row.events_per_batch = round(row.sent / batches, 1)
        row.store_commands_per_batch = round(commands / batches, 2)


def _key(value: bytes) -> tuple[int, str]:
    body = orjson.loads(value)
    return body["user_id"], body["pass_uuid"]


def _percentiles(
    row: Latency, events: list[dict[str, Any]], inputs: list[Any], outputs: list[Any]
) -> Latency:
    sent_at = {_key(r.value): r.timestamp for r in inputs}
    seen_at: dict[tuple[int, str], int] = {}
    for r in outputs:
        seen_at.setdefault(_key(r.value), r.timestamp)
    lat = [
        float(seen_at[key] - sent_at[key])
        for key in ((e["user_id"], e["pass_uuid"]) for e in events)
        if key in seen_at and key in sent_at
    ]
    row.received = len(lat)
    row.p50_ms, row.p95_ms, row.p99_ms = (percentile(lat, q) for q in (50, 95, 99))
    row.max_ms = max(lat) if lat else float("nan")
    return row
