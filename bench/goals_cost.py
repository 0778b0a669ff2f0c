"""The goals of issue 20: latency against capacity, and what one event costs.

Ratios within one run, evaluated from the results file (never asserted as timed tests):

- latency at 50 % of the service's sustained throughput: p50 ≤ 50 ms and p99 ≤ 250 ms;
  at 80 %: p99 ≤ 1 s (:mod:`bench.latency`);
- consumer CPU ≤ 0.25 ms per event (the uniform drain);
- store CPU per applied event ≤ 1.25 x (a batched read + a bulk write per document, from
  :func:`bench.store_ops.per_document` on the same documents);
- documents rewritten per applied event ≤ 1.1 (uniform);
- store commands per batch ≤ 4, plus one per write conflict.

Where one is missed, the bound is named from the same run's figures: the CPU of each
process during the point or drain, the rewrites beyond the user's write, the commands.
"""

from __future__ import annotations

from typing import Any

from bench.goals import Goal, _drains, _num, cpu_bound

NOT_MEASURED = "not measured"


def _uniform(results: dict[str, Any]) -> dict[str, Any] | None:
    drains = [d for d in _drains(results, "service") if d["distribution"] == "uniform"]
    return drains[0] if drains else None


def _figure(results: dict[str, Any], key: str) -> tuple[dict[str, Any], float | None]:
    """The service's uniform drain, and its figure ``key`` (None: not measured)."""
    drain = _uniform(results) or {}
    return drain, _num(drain.get(key))


def _points(results: dict[str, Any], pipeline: str, fraction: float) -> list[dict[str, Any]]:
    tu = results.get("ticket_used") or {}
    return [
        r
        for r in tu.get("latency", [])
        if r["pipeline"] == pipeline
        and r.get("kind") == "fraction"
        and abs((r.get("fraction") or 0.0) - fraction) < 1e-9
    ]


def _per_batch_commands(drain: dict[str, Any]) -> str:
    batches = drain.get("batches") or 0
    by_name = drain.get("store_commands") or {}
    return ", ".join(f"{k} {v / max(1, batches):.1f}" for k, v in by_name.items())


def _latency_goal(
    results: dict[str, Any], nproc: int, fraction: float, p50: float | None, p99: float
) -> Goal:
    pct = f"{100 * fraction:.0f} %"
    figure = f"latency at {pct} of the sustained throughput"
    goal = (f"p50 ≤ {p50:,.0f} ms, " if p50 is not None else "") + f"p99 ≤ {p99:,.0f} ms"
    rows = _points(results, "service", fraction)
    if not rows:
        tu = results.get("ticket_used") or {}
        below = [
            r
            for r in tu.get("latency", [])
            if r["pipeline"] == "service"
            and r.get("kind") == "fraction"
            and (r.get("fraction") or 0.0) < fraction
            and not r["drained"]
        ]
        if not below:
            return Goal(figure, goal, NOT_MEASURED, None)
        low = min(below, key=lambda r: r["fraction"])
        lower = f"{100 * low['fraction']:.0f} %"
        return Goal(
            figure,
            goal,
            f"not offered: the service did not drain {lower} ({low['offered_rate']:,}/s)",
            False,
            f"saturated at {lower}: " + cpu_bound(low, nproc, during=f"the {lower} point"),
        )
    r = max(rows, key=lambda x: _num(x["p99_ms"]) or float("inf"))
    through = _points(results, "passthrough", fraction)
    beside = (
        f"; passthrough p99 {max(x['p99_ms'] for x in through):,.0f} ms at the same rate"
        if through
        else ""
    )
    sustained = _num(r.get("sustained_rate"))
    text = (
        f"p50 {r['p50_ms']:,.0f}, p95 {r['p95_ms']:,.0f}, p99 {r['p99_ms']:,.0f} ms at "
        f"{r['offered_rate']:,}/s ({pct} of {sustained or 0:,.0f} ev/s; "
        f"{r['received']:,}/{r['sent']:,}, backlog grew {r.get('lag_growth_per_second', 0):,.0f}"
        f"/s{'' if r['drained'] else ', not drained'}){beside}"
    )
    p50_ok = p50 is None or (_num(r["p50_ms"]) or float("inf")) <= p50
    met = bool(r["drained"]) and p50_ok and (_num(r["p99_ms"]) or float("inf")) <= p99
    if met:
        return Goal(figure, goal, text, True)
    during = cpu_bound(r, nproc, during=f"the {pct} point")
    if not r["drained"]:
        bound = f"saturated at {pct} of the drain's rate: {during}"
    elif through and max(x["p99_ms"] for x in through) > p99:
        bound = "the Kafka path: the passthrough misses it at the same rate"
    else:
        drain, cmds = _figure(results, "store_commands_per_batch")
        bound = during + (
            f"; each batch waits on {cmds:.1f} store round trips ({_per_batch_commands(drain)})"
            if cmds is not None
            else ""
        )
    return Goal(figure, goal, text, False, bound)


def _consumer_cpu(results: dict[str, Any]) -> Goal:
    figure, goal = "consumer CPU per event (uniform drain)", "≤ 0.25 ms"
    drain, ms = _figure(results, "pipeline_cpu_ms_per_event")
    if ms is None:
        return Goal(figure, goal, NOT_MEASURED, None)
    cpu = drain["cpu_percent"].get("pipeline", 0.0)
    text = f"{ms:.3f} ms ({cpu:.0f} % of a core at {drain['events_per_second']:,.0f} ev/s)"
    if ms <= 0.25:
        return Goal(figure, goal, text, True)
    frames = ((results.get("profile") or {}).get("summary") or {}).get("top_consumer_frames")
    bound = "the consumer's own code" + (
        ": largest frames " + ", ".join(f"`{f['frame']}`" for f in frames[:3])
        if frames
        else " (see `python -m bench.cpu_profile`)"
    )
    return Goal(figure, goal, text, False, bound)


def _extra_work(drain: dict[str, Any]) -> str:
    """What the service asks of the store beyond one read and one write per user."""
    rewrites = _num(drain.get("rewrites_per_applied_event")) or 0.0
    user = _num(drain.get("user_writes_per_applied_event")) or 0.0
    return (
        f"{rewrites:.2f} documents rewritten per applied event ({rewrites - user:.2f} beyond "
        f"the user's write), {drain.get('store_commands_per_batch', 0):.1f} store commands per "
        f"batch of {drain.get('events_per_batch', 0):,.0f} events"
    )


def _store_cpu(results: dict[str, Any]) -> Goal:
    figure = "store CPU per applied event (uniform)"
    goal = "≤ 1.25 x (read + bulk write per document)"
    drain, ms = _figure(results, "store_cpu_ms_per_applied_event")
    per_doc = ((results.get("ticket_used") or {}).get("per_document") or [{}])[0]
    read = _num(per_doc.get("read_store_cpu_ms_per_document"))
    write = _num(per_doc.get("write_store_cpu_ms_per_document"))
    if ms is None or read is None or write is None:
        local = " (the store's CPU is read from /proc: a store on this machine)" if per_doc else ""
        return Goal(figure, goal, NOT_MEASURED + local, None)
    reference = read + write
    ratio = ms / reference if reference else float("inf")
    text = (
        f"{ms:.2f} ms = {ratio:.2f}x of {reference:.2f} ms (read {read:.2f} + bulk write "
        f"{write:.2f} ms of store CPU per document, {per_doc.get('documents', 0):,} documents)"
    )
    met = ratio <= 1.25
    work = _extra_work(drain) + _documents(drain, read, write)
    bound = "" if met else "the store's work: " + work
    return Goal(figure, goal, text, met, bound)


def _documents(drain: dict[str, Any], read: float, write: float) -> str:
    """The goal's reference is one read and one write per applied event; what the drain
    counted (bench/counted.py) and its store CPU against that."""
    reads = _num(drain.get("documents_read_per_event"))
    writes = _num(drain.get("documents_written_per_event"))
    applied, events = drain.get("applied_events") or 0, drain.get("processed") or 0
    if reads is None or writes is None or not applied or not events:
        return ""
    per_applied = reads * events / applied
    idle = 100 * (1 - applied / events)
    store = _num(drain.get("store_cpu_ms_per_event")) or 0.0
    counted = reads * read + writes * write
    if counted <= 0:
        return ""
    return (
        f"; {per_applied:.2f} documents read per applied event ({idle:.0f} % "
        "of the events changed nothing, their user read all the same); against the "
        f"documents the drain read and rewrote, its store CPU is {store / counted:.2f}x "
        "their read + bulk write"
    )


def _rewrites(results: dict[str, Any]) -> Goal:
    figure, goal = "document rewrites per applied event (uniform)", "≤ 1.1"
    drain, total = _figure(results, "rewrites_per_applied_event")
    if total is None:
        return Goal(figure, goal, NOT_MEASURED, None)
    user = _num(drain.get("user_writes_per_applied_event")) or 0.0
    text = f"{total:.2f} ({user:.2f} the user's conditional write, {total - user:.2f} others)"
    if total <= 1.1:
        return Goal(figure, goal, text, True)
    if total - user > 0.1:
        bound = (
            f"the outbox clear: {total - user:.2f} rewrites per applied event after the "
            "user's write (each published status change is cleared by a second update)"
        )
    else:
        bound = f"re-evaluated writes: {drain.get('conflicts_per_batch', 0):.2f} conflicts a batch"
    return Goal(figure, goal, text, False, bound)


def _commands(results: dict[str, Any]) -> Goal:
    figure, goal = "store commands per batch (uniform)", "≤ 4, plus one per conflict"
    drain, cmds = _figure(results, "store_commands_per_batch")
    if cmds is None:
        return Goal(figure, goal, NOT_MEASURED, None)
    conflicts = _num(drain.get("conflicts_per_batch")) or 0.0
    limit = 4 + conflicts
    text = (
        f"{cmds:.1f} per batch of {drain.get('events_per_batch', 0):,.0f} events "
        f"({_per_batch_commands(drain)}); {conflicts:.2f} conflicts per batch: limit {limit:.1f}"
    )
    if cmds <= limit:
        return Goal(figure, goal, text, True)
    batches = max(1, drain.get("batches") or 1)
    by_name = drain.get("store_commands") or {}
    get_more = by_name.get("getMore", 0) / batches
    if get_more >= 1:
        bound = f"the batch read's getMore round trips: {get_more:.1f} per batch"
    else:
        name, count = max(by_name.items(), key=lambda kv: kv[1])
        bound = f"`{name}` commands: {count / batches:.1f} per batch"
    return Goal(figure, goal, text, False, bound)


def goals(results: dict[str, Any], nproc: int) -> list[Goal]:
    return [
        _latency_goal(results, nproc, 0.5, 50, 250),
        _latency_goal(results, nproc, 0.8, None, 1000),
        _consumer_cpu(results),
        _store_cpu(results),
        _rewrites(results),
        _commands(results),
    ]
