"""The capacity model of ``docs/scaling.md``, computed from measured figures.

    python -m bench.capacity [--results bench/results/latest.json] [--check] [--write]

Reads the per-event and per-document costs a benchmark run measured (``bench.run``), states
every assumption as a named parameter, and prints, for 1M, 10M and 100M users at 1k, 10k and
100k events/s: topic partitions, consumer replicas, MongoDB shards and what bounds them,
tick shards and cadence, full-check duration, and the resources of one replica.
``--check`` recomputes the measured points of the same run from the model's inputs (each
prediction uses other measurements than the point it predicts) and fails (exit 1) if one
is off by more than ``TOLERANCE``. ``--write`` replaces the generated part of
``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import orjson

from bench.common import REPO, a_user

USERS = (1_000_000, 10_000_000, 100_000_000)
RATES = (1_000, 10_000, 100_000)
TOLERANCE = 0.35  # a measured point is reproduced when predicted within ±35 %
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the model does not measure. Change them here; the doc shows them."""

    replica_cpu_target: float = 0.6  # of the one core a consumer's event loop can use
    partitions_per_replica: int = 2  # headroom: partitions cannot be added without a reshuffle
    min_partitions: int = 12
    min_replicas: int = 2
    shard_cores: int = 8  # vCPUs of one MongoDB shard's primary
    shard_cpu_target: float = 0.5
    # MongoDB's CPU per document of ~1.4 KB read by an indexed `$in` and per document
    # rewritten by a conditional update inside an unordered bulk (index upkeep, oplog and
    # journal included): not measurable here. The local store's measured costs are shown
    # beside them as an upper bound. Measure them on the target cluster and set them here.
    mongodb_cpu_per_read: float = 50e-6
    mongodb_cpu_per_write: float = 150e-6
    shard_data_gb: float = 500.0  # data per shard (the working set is the indexes + hot users)
    index_overhead: float = 0.2  # index bytes per document byte (user_id, next_check_at, ...)
    due_per_user_per_day: float = 0.1  # 3 passes, each changing by time about every 30 days
    tick_seconds: float = 60.0  # CronJob cadence of the due tick
    tick_busy_target: float = 0.5  # a due sweep may use half of the interval
    full_check_window_hours: float = 4.0  # the daily full check must finish within this


@dataclass(frozen=True, slots=True)
class Measured:
    """The figures the model is derived from, all from one benchmark run."""

    source: str
    nproc: int
    events_per_second: float  # one service replica at saturation here (uniform drain)
    consumer_cpu_per_event: float  # core-seconds
    store_cpu_per_event: float
    kafka_cpu_per_event: float
    # the store's work: cache documents read and rewritten per event (uniform drain), and
    # the local store's CPU per document read (`$in`) and bulk-written, measured on the
    # same documents by `bench.store_ops` in the same run
    reads_per_event: float
    writes_per_event: float
    local_cpu_per_read: float
    local_cpu_per_write: float
    consumer_rss_mb: float
    full_users: int  # largest full check measured
    full_docs_per_second: float
    full_cpu_per_doc: float
    full_rss_mb: float
    due_seconds_per_user: float  # due sweep, 1 % due, at the largest size
    due_query_seconds: float  # what a due sweep costs beyond its due users (the query)
    doc_bytes: int  # BSON size of one benchmark user (3 passes)


def _service_drain(results: dict[str, Any], dist: str) -> dict[str, Any]:
    for d in results["ticket_used"]["throughput"]:
        if d["pipeline"] == "service" and d["distribution"] == dist:
            return dict(d)
    raise KeyError(f"no service drain of the {dist} distribution in the results")


def _per_event(drain: dict[str, Any], key: str) -> float:
    cpu = drain["cpu_percent"]
    value = cpu.get(key, cpu.get("ferretdb", 0.0) if key == "store" else 0.0)
    return float(value) / 100 / max(float(drain["events_per_second"]), 1e-9)


def _documents(drain: dict[str, Any], kind: str) -> float:
    """Cache documents read or written per event in a drain (runs before 2026-12-04
    evening did not count them)."""
    value = drain.get(f"documents_{kind}_per_event")
    if value is None:
        raise ValueError(f"the {drain['distribution']} drain did not count documents {kind}")
    return float(value)


def _complete_sweeps(results: dict[str, Any], *kinds: str) -> list[dict[str, Any]]:
    """Sweep sizes whose sweeps of ``kinds`` completed, smallest first."""
    rows = [r for r in results.get("sweeps") or [] if not any("error" in r[k] for k in kinds)]
    return sorted(rows, key=lambda r: r["users"])


def sweep_overhead(results: dict[str, Any]) -> float:
    """Seconds a sweep process spends apart from its documents (start, connect, indexes,
    producer): bounded above by the quickest due sweep measured, which reads only a few."""
    times = [r["due_fixed"]["seconds"] for r in _complete_sweeps(results, "due_fixed")]
    return min(times) if times else 0.0


def due_costs(row: dict[str, Any]) -> tuple[float, float]:
    """(query seconds, seconds per due user) of the due sweep at one size: a line through
    its two due sweeps (1 % due and a fixed number due). With one point (both due the
    same number), all of the time is charged to the due users."""
    n1, t1 = row["due_users"], row["due"]["seconds"]
    n2, t2 = row["fixed_due_users"], row["due_fixed"]["seconds"]
    if n1 > n2 and t1 > t2:
        per_user = (t1 - t2) / (n1 - n2)
        return max(0.0, t2 - n2 * per_user), per_user
    return 0.0, t1 / max(n1, 1)


def measured(results: dict[str, Any], source: str = "") -> Measured:
    drain = _service_drain(results, "uniform")
    due_rows = _complete_sweeps(results, "due", "due_fixed")
    full_rows = _complete_sweeps(results, "full")
    if not due_rows or not full_rows:
        raise ValueError("the results have no complete due sweeps or no complete full check")
    large = full_rows[-1]
    query, per_due = due_costs(due_rows[-1])
    tu = results["ticket_used"]
    if not tu.get("per_document"):
        raise ValueError("the results have no per-document store costs (bench.store_ops)")
    per_doc = tu["per_document"][-1]
    rss = [d["peak_rss_mb"] for d in tu["throughput"] if d["pipeline"] == "service"]
    rss.append((tu.get("latency_peak_rss_mb") or {}).get("service", 0.0))
    return Measured(
        source=source,
        nproc=int(results["machine"]["nproc"]),
        events_per_second=float(drain["events_per_second"]),
        consumer_cpu_per_event=_per_event(drain, "pipeline"),
        store_cpu_per_event=_per_event(drain, "store"),
        kafka_cpu_per_event=_per_event(drain, "kafka"),
        reads_per_event=_documents(drain, "read"),
        writes_per_event=_documents(drain, "written"),
        local_cpu_per_read=per_doc["read_store_cpu_ms_per_document"] / 1000,
        local_cpu_per_write=per_doc["write_store_cpu_ms_per_document"] / 1000,
        consumer_rss_mb=float(max(rss)),
        full_users=int(large["users"]),
        full_docs_per_second=large["full"]["documents_read"]
        / max(large["full"]["seconds"] - sweep_overhead(results), 1e-9),
        full_cpu_per_doc=float(large["full"].get("cpu_seconds", math.nan))
        / large["full"]["documents_read"],
        full_rss_mb=float(large["full"].get("peak_rss_mb") or math.nan),
        due_seconds_per_user=per_due,
        due_query_seconds=query,
        doc_bytes=len(bson.encode(a_user(1, datetime.now(UTC)))),
    )


# -- the model -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    events_per_second: int
    replicas: int
    partitions: int
    consumer_cores: float
    store_documents_per_second: float  # read + rewritten
    store_cores: float  # at the assumed MongoDB costs per document
    local_store_cores: float  # at the local store's measured costs (an upper bound)
    shards: int
    shards_by: str  # "CPU" or "data"
    data_gb: float
    due_per_tick: float
    tick_shards: int
    due_sweep_seconds: float
    due_queries_per_tick: int
    full_check_hours: float
    full_check_processes: int
    replica_cpu: float  # cores requested per replica
    replica_memory_mb: int


def store_cpu_per_event(m: Measured, reads: float, writes: float) -> float:
    """The local store's CPU per event for ``reads`` and ``writes`` documents per event, at
    ``bench.store_ops``' costs per document (no calibration on the drain)."""
    return reads * m.local_cpu_per_read + writes * m.local_cpu_per_write


def local_store_fit(m: Measured) -> float:
    """The uniform drain's store CPU per event against reading and bulk-writing its
    documents alone: what the service's store work costs beyond those two (watermarks,
    bookkeeping, small bulks). 1.0 is no overhead."""
    return m.store_cpu_per_event / max(
        store_cpu_per_event(m, m.reads_per_event, m.writes_per_event), 1e-12
    )


def plan(users: int, rate: int, m: Measured, a: Assumptions) -> Plan:
    consumer_cores = rate * m.consumer_cpu_per_event
    replicas = max(a.min_replicas, math.ceil(consumer_cores / a.replica_cpu_target))
    partitions = max(a.min_partitions, replicas * a.partitions_per_replica)
    partitions = math.ceil(partitions / 6) * 6  # divisible by 1, 2, 3 and 6 replicas alike
    due_per_second = users * a.due_per_user_per_day / 86_400
    # the store's work is per document: each event reads and rewrites what the uniform
    # drain measured; each due user is read once (in the sweep's cursor) and written once
    reads = rate * m.reads_per_event + due_per_second
    writes = rate * m.writes_per_event + due_per_second
    docs = reads + writes
    mongo = reads * a.mongodb_cpu_per_read + writes * a.mongodb_cpu_per_write
    store_cores = mongo / a.shard_cpu_target
    local = (reads * m.local_cpu_per_read + writes * m.local_cpu_per_write) * local_store_fit(m)
    local_cores = local / a.shard_cpu_target
    data_gb = users * m.doc_bytes * (1 + a.index_overhead) / 1e9
    by_cpu = math.ceil(store_cores / a.shard_cores)
    by_data = math.ceil(data_gb / a.shard_data_gb)
    shards = max(1, by_cpu, by_data)
    due_per_tick = due_per_second * a.tick_seconds
    work = due_per_tick * m.due_seconds_per_user  # seconds of sweep work per tick
    tick_shards = max(1, math.ceil(work / (a.tick_seconds * a.tick_busy_target)))
    # a due query is not on the shard key: every tick shard asks every MongoDB shard
    queries = tick_shards * shards
    due_seconds = m.due_query_seconds + work / tick_shards
    full_seconds = users / m.full_docs_per_second
    window = a.full_check_window_hours * 3600
    return Plan(
        users=users,
        events_per_second=rate,
        replicas=replicas,
        partitions=partitions,
        consumer_cores=round(consumer_cores, 2),
        store_documents_per_second=round(docs),
        store_cores=round(store_cores, 1),
        local_store_cores=round(local_cores),
        shards=shards,
        shards_by="CPU" if by_cpu >= by_data else "data",
        data_gb=round(data_gb, 1),
        due_per_tick=round(due_per_tick, 1),
        tick_shards=tick_shards,
        due_sweep_seconds=round(due_seconds, 2),
        due_queries_per_tick=queries,
        full_check_hours=round(full_seconds / 3600, 2),
        full_check_processes=max(1, math.ceil(full_seconds / window)),
        replica_cpu=round(min(1.0, consumer_cores / replicas / a.replica_cpu_target), 2),
        replica_memory_mb=int(math.ceil(1.5 * m.consumer_rss_mb / 32) * 32),
    )


def plans(m: Measured, a: Assumptions) -> list[Plan]:
    return [plan(n, r, m, a) for n in USERS for r in RATES]


# -- does the model reproduce what was measured? ---------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    predicted: float
    measured: float
    unit: str
    how: str

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured if self.measured else math.inf

    @property
    def reproduced(self) -> bool:
        return abs(self.error) <= TOLERANCE


def points(results: dict[str, Any], m: Measured) -> list[Point]:
    """Measured points, each predicted from other measurements of the same run."""
    out: list[Point] = [
        # 1. The store's CPU per event from its cost per document alone: bench.store_ops
        # reads and bulk-writes the same documents apart from the service, and the drain
        # counted the documents each event read and rewrote.
        Point(
            "store CPU per event, uniform drain",
            1e3 * store_cpu_per_event(m, m.reads_per_event, m.writes_per_event),
            1e3 * m.store_cpu_per_event,
            "ms",
            "documents read and rewritten per event in the drain, at bench.store_ops' store "
            "CPU per document read (`$in`) and bulk-written",
        )
    ]
    # 2. Zipf throughput from the uniform drain's costs: the store's work is per document
    # (Zipf's batches hold fewer distinct users: fewer documents per event, counted in its
    # drain), calibrated by the uniform drain's store CPU against its documents; the
    # consumer's and Kafka's per event (the consumer's is charged in full, though it too
    # shrinks with fewer documents: the model errs towards more capacity).
    try:
        zipf = _service_drain(results, "zipf")
        docs_z = (_documents(zipf, "read"), _documents(zipf, "written"))
    except (KeyError, ValueError):
        zipf = None
    if zipf is not None:
        store_z = store_cpu_per_event(m, *docs_z) * local_store_fit(m)
        cost_z = m.consumer_cpu_per_event + store_z + m.kafka_cpu_per_event
        busy_z = sum(zipf["cpu_percent"].get(k, 0.0) for k in ("pipeline", "store", "kafka"))
        out.append(
            Point(
                "service throughput, Zipf drain",
                busy_z / 100 / cost_z,
                zipf["events_per_second"],
                "events/s",
                "Zipf's documents read and rewritten per event at the uniform drain's store "
                "CPU per document, the uniform drain's consumer and Kafka CPU per event, and "
                "the CPU the three used in the Zipf drain",
            )
        )
    due_rows = _complete_sweeps(results, "due", "due_fixed")
    if len(due_rows) >= 2:
        prev, large = due_rows[-2], due_rows[-1]
        query, per_due = due_costs(prev)
        out.append(
            Point(
                f"due sweep (1 % due) at {large['users']:,} users",
                query + large["due_users"] * per_due,
                large["due"]["seconds"],
                "s",
                f"query cost and seconds per due user at {prev['users']:,} users",
            )
        )
        out.append(
            Point(
                f"due sweep ({large['fixed_due_users']} due) at {large['users']:,} users",
                query + large["fixed_due_users"] * per_due,
                large["due_fixed"]["seconds"],
                "s",
                f"query cost and seconds per due user at {prev['users']:,} users",
            )
        )
    full_rows = _complete_sweeps(results, "full")
    if len(full_rows) >= 2:
        prev, large = full_rows[-2], full_rows[-1]
        rss = (prev["full"].get("peak_rss_mb"), large["full"].get("peak_rss_mb"))
        overhead = sweep_overhead(results)
        rate = prev["full"]["documents_read"] / max(prev["full"]["seconds"] - overhead, 1e-9)
        out.append(
            Point(
                f"full check at {large['users']:,} users",
                overhead + large["users"] / rate,
                large["full"]["seconds"],
                "s",
                f"documents per second of the full check at {prev['users']:,} users, beyond "
                "a sweep process's fixed cost (the quickest due sweep)",
            )
        )
        if None in rss:
            return out
        out.append(
            Point(
                f"full check peak RSS at {large['users']:,} users",
                prev["full"]["peak_rss_mb"],
                large["full"]["peak_rss_mb"],
                "MB",
                f"constant memory: the peak at {prev['users']:,} users",
            )
        )
    return out


# -- output ----------------------------------------------------------------------------


def _n(value: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def render(m: Measured, a: Assumptions, results: dict[str, Any]) -> str:
    lines = [
        (
            f"_Generated by `python -m bench.capacity --write` from `{m.source}` "
            f"({results.get('started_at', '?')}, store: "
            f"{(results.get('store') or {}).get('server', 'unknown')})._"
        ),
        "",
        (
            "**Measured inputs** (one service replica, uniform drain at saturation; sweeps at "
            f"{m.full_users:,} users):"
        ),
        "",
        "| input | value |",
        "|---|---:|",
        f"| events/s of one replica here | {m.events_per_second:,.0f} |",
        f"| consumer CPU per event | {1e6 * m.consumer_cpu_per_event:,.0f} µs |",
        f"| store CPU per event (local store) | {1e6 * m.store_cpu_per_event:,.0f} µs |",
        f"| Kafka CPU per event | {1e6 * m.kafka_cpu_per_event:,.0f} µs |",
        f"| cache documents read per event | {m.reads_per_event:.2f} |",
        f"| cache documents rewritten per event | {m.writes_per_event:.2f} |",
        f"| local store CPU per document read (`$in`) | {1e6 * m.local_cpu_per_read:,.0f} µs |",
        f"| local store CPU per document bulk-written | {1e6 * m.local_cpu_per_write:,.0f} µs |",
        f"| store CPU per event / its documents' read + write | {local_store_fit(m):.2f} |",
        f"| consumer peak RSS under load | {m.consumer_rss_mb:,.0f} MB |",
        f"| full check: documents/s (one process) | {m.full_docs_per_second:,.0f} |",
        f"| full check: CPU per document | {1e6 * m.full_cpu_per_doc:,.0f} µs |",
        f"| full check peak RSS at {m.full_users:,} users | "
        + ("n/a" if math.isnan(m.full_rss_mb) else f"{m.full_rss_mb:,.0f} MB")
        + " |",
        f"| due sweep: seconds per due user | {1e3 * m.due_seconds_per_user:,.2f} ms |",
        f"| due sweep: query cost beyond the due users | {m.due_query_seconds:,.3f} s |",
        f"| BSON bytes per user (3 passes) | {m.doc_bytes:,} |",
        "",
        "**Assumptions**: " + ", ".join(f"`{k}` = {v}" for k, v in asdict(a).items()) + ".",
        "",
        (
            "| users | events/s | partitions | consumer replicas (cores) | documents read + "
            "written/s "
            "| MongoDB cores (local store's) | MongoDB shards (bound) | data GB | due per tick "
            "| tick shards "
            "| due sweep s | due queries per tick | full check h (processes) "
            "| per replica: CPU, memory |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {_n(p.users)} | {_n(p.events_per_second)} | {p.partitions} "
        f"| {p.replicas} ({p.consumer_cores:g}) | {_n(p.store_documents_per_second)} "
        f"| {p.store_cores:g} ({p.local_store_cores:,}) | {p.shards} ({p.shards_by}) "
        f"| {p.data_gb:g} "
        f"| {p.due_per_tick:g} | {p.tick_shards} | {p.due_sweep_seconds:g} "
        f"| {p.due_queries_per_tick} | {p.full_check_hours:g} ({p.full_check_processes}) "
        f"| {p.replica_cpu:g} core, {p.replica_memory_mb} MiB |"
        for p in plans(m, a)
    )
    lines += [
        "",
        f"**The model against the measured points** (reproduced: within ±{TOLERANCE:.0%}):",
        "",
        "| point | predicted | measured | error | from | reproduced? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for pt in points(results, m):
        lines.append(
            f"| {pt.name} | {pt.predicted:,.2f} {pt.unit} | {pt.measured:,.2f} {pt.unit} "
            f"| {pt.error:+.0%} | {pt.how} | {'yes' if pt.reproduced else '**no**'} |"
        )
    return "\n".join(lines)


def write_doc(doc: Path, body: str) -> None:
    text = doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} section")
    doc.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{body}\n{END}", text))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "latest.json")
    p.add_argument("--check", action="store_true", help="exit 1 if a point is not reproduced")
    p.add_argument("--write", action="store_true", help="update docs/scaling.md")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "scaling.md")
    args = p.parse_args(argv)
    results = orjson.loads(args.results.read_bytes())
    source = str(args.results.relative_to(REPO)) if args.results.is_relative_to(REPO) else ""
    m = measured(results, source or str(args.results))
    a = Assumptions()
    body = render(m, a, results)
    print(body)
    if args.write:
        write_doc(args.doc, body)
        print(f"wrote {args.doc}")
    missed = [pt for pt in points(results, m) if not pt.reproduced]
    if args.check and missed:
        for pt in missed:
            print(f"not reproduced: {pt.name} ({pt.error:+.0%})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
