"""One pipeline draining a topic of pre-produced ticket-used events, and what it cost.

The drain is timed from the pipeline's partition assignment to the moment its group's
committed offsets reach the end of the topic (every pipeline commits only after its outputs
are acknowledged); ``max_seconds`` caps a slow drain, and the rate is then the events
committed within the cap. Over the same interval: CPU of the pipeline, the store, Kafka and
the machine (``/proc``), the pipeline's peak RSS, and for the service its own counters
(events applied, batches, store commands, write conflicts) and the documents its updates
rewrote (:mod:`bench.counted`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from consumer.domain.times import format_instant

from bench import counted
from bench.common import (
    Endpoints,
    Names,
    Pipeline,
    committed_total,
    cpu_snapshot,
    create_topics,
    delete_topics,
    pass_uuid,
    proc_status_kb,
    prometheus_sum,
    python_module,
    unique_prefix,
)

# The commands that read or write data (not the driver's handshakes and pings).
DATA_COMMANDS = ("find", "getMore", "update", "insert", "delete", "aggregate", "count")


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
    # Per event committed within the drain: CPU milliseconds of the pipeline and the store.
    pipeline_cpu_ms_per_event: float | None = None
    store_cpu_ms_per_event: float | None = None
    # The service's: events applied (a document written), the store's CPU per applied
    # event, documents rewritten per applied event (all / the user's conditional write),
    # batches, and per batch: events, store data commands (by name), write conflicts.
    applied_events: int | None = None
    store_cpu_ms_per_applied_event: float | None = None
    rewrites_per_applied_event: float | None = None
    user_writes_per_applied_event: float | None = None
    batches: int | None = None
    events_per_batch: float | None = None
    store_commands_per_batch: float | None = None
    store_commands: dict[str, int] = field(default_factory=dict)
    conflicts_per_batch: float | None = None
    # Per event committed: cache documents the service read (its batches' distinct users,
    # plus read-backs) and rewrote; what the capacity model charges the store for.
    documents_read_per_event: float | None = None
    documents_written_per_event: float | None = None


def event(user_id: int, index: int) -> dict[str, Any]:
    """A ticket-used event using pass ``index`` of ``user_id`` now."""
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user_id,
        "pass_uuid": pass_uuid(user_id, index),
        "used_at": format_instant(datetime.now(UTC)),
    }


def extra_env(pipeline: str) -> dict[str, str]:
    """``service-cN``: the consumer with ``PASS_STATUS_USER_CONCURRENCY=N``."""
    if pipeline.startswith("service-c"):
        return {"user_concurrency": pipeline.removeprefix("service-c")}
    return {}


def argv_of(pipeline: str) -> list[str]:
    """The service runs under :mod:`bench.counted` (the same consumer, its rewrites counted)."""
    if pipeline.startswith("service"):
        return python_module("bench.counted", "run")
    return python_module("bench.baselines", pipeline)


async def wait_committed(
    admin: Any, group: str, topic: str, target: int, deadline: float
) -> tuple[int, float]:
    """Poll the group's committed total until ``target`` or ``deadline``; (committed, when)."""
    while True:
        done = await committed_total(admin, group, topic)
        now = time.time()
        if done >= target or time.monotonic() >= deadline:
            return done, now
        await asyncio.sleep(0.1)


def _ratio(a: float, b: float, digits: int = 3) -> float:
    return round(a / max(b, 1e-9), digits)


def _service_figures(metrics: str, rewrites: dict[str, int] | None) -> dict[str, Any]:
    """The service's counters at the end of its drain, as the Drain's fields (partly)."""
    applied = int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("pass_status_events_consumed_total{") and 'outcome="applied"' in line
        )
    )
    batches = int(prometheus_sum(metrics, "pass_status_batch_size_events_count"))
    commands = {
        name: int(
            prometheus_sum(metrics, f'pass_status_mongodb_commands_total{{command="{name}"}}')
        )
        for name in DATA_COMMANDS
    }
    conflicts = prometheus_sum(metrics, "pass_status_write_conflicts_total")
    out: dict[str, Any] = {
        "applied_events": applied,
        "batches": batches,
        "store_commands": {k: v for k, v in commands.items() if v},
        "store_commands_per_batch": _ratio(sum(commands.values()), batches, 2),
        "conflicts_per_batch": _ratio(conflicts, batches, 2),
    }
    if rewrites is not None:
        total = rewrites.get("user_writes", 0) + rewrites.get("other", 0)
        out["rewrites_per_applied_event"] = _ratio(total, applied)
        out["user_writes_per_applied_event"] = _ratio(rewrites.get("user_writes", 0), applied)
        out["documents_read"] = rewrites.get("documents_read")
        out["documents_written"] = total
    return out


@asynccontextmanager
async def deployment(
    ep: Endpoints,
    pipeline: str,
    database: str,
    partitions: int,
    *,
    topic: str | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Names, Pipeline, Any]]:
    """``pipeline`` started on topics of its own (the input too, unless ``topic`` is
    given), with an admin client for its offsets; (names, process, admin). Stopped and its
    topics deleted at the end."""
    names = Names.of(unique_prefix(pipeline[:4]), ticket_used=topic)
    topics = [*([] if topic else [names.ticket_used]), *names.outputs]
    await create_topics(ep.bootstrap, topics, partitions)
    own = names.env(ep, mongodb_database=database, **extra_env(pipeline))
    proc = Pipeline(pipeline, argv or argv_of(pipeline), {**own, **(env or {})})
    admin = AIOKafkaAdminClient(bootstrap_servers=ep.bootstrap)
    await admin.start()
    try:
        await asyncio.to_thread(proc.start)
        yield names, proc, admin
    finally:
        await asyncio.to_thread(proc.stop)
        await admin.close()
        await delete_topics(ep.bootstrap, topics)


async def drain(
    ep: Endpoints,
    rnd: int,
    dist: str,
    pipeline: str,
    database: str,
    topic: str,
    *,
    events: int,
    partitions: int,
    max_seconds: float,
    argv: list[str] | None = None,
) -> Drain:
    service: dict[str, Any] = {}
    store_ops: float | None = None
    with tempfile.TemporaryDirectory(prefix="bench_counts_") as scratch:
        counts = Path(scratch) / "counts.json"
        async with deployment(
            *(ep, pipeline, database, partitions),
            topic=topic,
            argv=argv,
            env={counted.ENV: str(counts)},
        ) as (names, proc, admin):
            started = proc.seen["partitions_assigned"][0]
            cpu0 = cpu_snapshot(proc.pid, ep)
            deadline = time.monotonic() + max_seconds
            done, ended = await wait_committed(admin, names.prefix, topic, events, deadline)
            cpu1 = cpu_snapshot(proc.pid, ep)
            rss = proc_status_kb(proc.pid, "VmHWM") / 1024
            processed = done
            if pipeline.startswith("service"):
                metrics = await asyncio.to_thread(proc.metrics_text)
                processed = int(prometheus_sum(metrics, "pass_status_events_consumed_total"))
                service = _service_figures(metrics, counted.read_counts(counts))
                store_ops = sum(service["store_commands"].values())
    if not pipeline.startswith("service"):
        summary = proc.seen.get("pipeline_done", (0.0, {"processed": done}))[1]
        processed = int(summary["processed"])
        store_ops = summary.get("store_ops")
    seconds = max(1e-6, ended - started)
    spent = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    if service:
        service["events_per_batch"] = _ratio(done, service["batches"], 1)
        read, written = service.pop("documents_read", None), service.pop("documents_written", None)
        if read is not None:
            service["documents_read_per_event"] = _ratio(read, done)
        if written is not None:
            service["documents_written_per_event"] = _ratio(written, done)
        if "store" in spent:
            service["store_cpu_ms_per_applied_event"] = _ratio(
                1000 * spent["store"], service["applied_events"]
            )
    return Drain(
        rnd,
        dist,
        pipeline,
        events,
        processed,
        round(seconds, 3),
        round(done / seconds, 1),
        done < events,
        round(rss, 1),
        {k: round(100 * v / seconds, 1) for k, v in spent.items()},
        proc.transient_faults,
        None if store_ops is None else round(store_ops / max(1, processed), 2),
        _ratio(1000 * spent["pipeline"], done),
        _ratio(1000 * spent["store"], done) if "store" in spent else None,
        **service,
    )
