"""Markdown tables of the ticket-used stage: drains, per-event cost, latency.

Figures a results file lacks (written before they were measured) read "not measured".
"""

from __future__ import annotations

import math
from typing import Any

NOT_MEASURED = "not measured"


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def cell(row: dict[str, Any], key: str, digits: int = 0) -> str:
    """``row[key]`` formatted; "not measured" when the row has no such figure."""
    return fmt(row[key], digits) if key in row else NOT_MEASURED


def _cpu(cpu: dict[str, Any]) -> str:
    if not cpu:
        return NOT_MEASURED
    store = cpu.get("store", cpu.get("ferretdb"))
    return (
        f"{fmt(cpu.get('pipeline'))} / {fmt(store)} / {fmt(cpu.get('kafka'))} "
        f"/ {fmt(cpu.get('machine'))}"
    )


def _throughput(tu: dict[str, Any]) -> list[str]:
    out = [
        "### Throughput (drain of pre-produced events)",
        "",
        (
            "| round | distribution | pipeline | events | processed | seconds | events/s "
            "| store ops/event | peak RSS MB | CPU % of a core (pipeline / store / kafka "
            "/ machine) |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in tu["throughput"]:
        capped = " (capped)" if d["capped"] else ""
        out.append(
            f"| {d['round']} | {d['distribution']} | {d['pipeline']} | {fmt(d['events'])} "
            f"| {fmt(d['processed'])}{capped} | {fmt(d['seconds'], 1)} "
            f"| {fmt(d['events_per_second'])} | {fmt(d.get('store_ops_per_event'), 2)} "
            f"| {fmt(d['peak_rss_mb'])} | {_cpu(d['cpu_percent'])} |"
        )
    out += ["", "| distribution | ratio | value |", "|---|---|---:|"]
    for dist, ratios in tu["summary"]["ratios"].items():
        out.extend(f"| {dist} | {k} | {fmt(v, 3)} |" for k, v in ratios.items())
    return [*out, ""]


def _per_event(tu: dict[str, Any]) -> list[str]:
    out = [
        "### Cost per event (same drains)",
        "",
        (
            "CPU from `/proc` over each drain, per event committed; *applied*: events that "
            "changed a document (the service's count); rewrites: documents its updates "
            "modified (`bench.counted`), the user's conditional write and the others (outbox "
            "clears); commands: the service's data commands (round trips) per fetched batch."
        ),
        "",
        (
            "| distribution | pipeline | pipeline CPU ms/event | store CPU ms/event "
            "| store CPU ms/applied event | rewrites/applied event (user's write) "
            "| events/batch | store commands/batch | conflicts/batch |"
        ),
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for d in tu["throughput"]:
        rewrites = cell(d, "rewrites_per_applied_event", 2)
        if d.get("user_writes_per_applied_event") is not None:
            rewrites += f" ({fmt(d['user_writes_per_applied_event'], 2)})"
        out.append(
            f"| {d['distribution']} | {d['pipeline']} "
            f"| {cell(d, 'pipeline_cpu_ms_per_event', 3)} "
            f"| {cell(d, 'store_cpu_ms_per_event', 3)} "
            f"| {cell(d, 'store_cpu_ms_per_applied_event', 3)} | {rewrites} "
            f"| {cell(d, 'events_per_batch', 1)} | {cell(d, 'store_commands_per_batch', 1)} "
            f"| {cell(d, 'conflicts_per_batch', 2)} |"
        )
    out += ["", *_per_document(tu)]
    return out


def _per_document(tu: dict[str, Any]) -> list[str]:
    rows = tu.get("per_document")
    head = "Store cost per document (`bench.store_ops.per_document`, on the service's database"
    if not rows:
        return [f"{head}): {NOT_MEASURED}.", ""]
    out = [
        (
            f"{head}, documents the uniform drain wrote; reads by `$in` and unordered bulk "
            "writes by `_id` and `passes`, 500 a command):"
        ),
        "",
        "| round | documents | read ms | bulk write ms | read store CPU ms | write store CPU ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    out.extend(
        f"| {r['round']} | {fmt(r['documents'])} | {fmt(r['read_ms_per_document'], 3)} "
        f"| {fmt(r['write_ms_per_document'], 3)} "
        f"| {fmt(r['read_store_cpu_ms_per_document'], 3)} "
        f"| {fmt(r['write_store_cpu_ms_per_document'], 3)} |"
        for r in rows
    )
    return [*out, ""]


def _point(r: dict[str, Any]) -> str:
    if "kind" not in r:
        return "fixed rate"
    if r["kind"] == "saturation":
        return "saturation"
    return f"{100 * (r.get('fraction') or 0):.0f} % of {fmt(r.get('sustained_rate'))}"


def _latency(tu: dict[str, Any]) -> list[str]:
    sustained = "; ".join(
        f"round {s['round']}: {fmt(s['events_per_second'])} events/s ({s['distribution']} drain)"
        for s in tu.get("sustained") or []
    )
    out = [
        "### Latency against capacity (output - input Kafka timestamps)",
        "",
        (
            f"Offered rates: fractions of the service's sustained throughput ({sustained}), "
            "the same absolute rates for the passthrough; then a fixed saturation rate."
            if sustained
            else f"Sustained throughput: {NOT_MEASURED} (fixed offered rates)."
        ),
        "",
        (
            "| pipeline | point | offered/s | achieved/s | sent | received | drained | p50 ms "
            "| p95 ms | p99 ms | max ms | backlog growth ev/s | peak RSS MB "
            "| CPU % of a core (pipeline / store / kafka / machine) "
            "| events per batch | store commands per batch | store CPU ms per event |"
        ),
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    out.extend(
        f"| {r['pipeline']} | {_point(r)} | {fmt(r['offered_rate'])} "
        f"| {fmt(r['achieved_rate'])} | {fmt(r['sent'])} | {fmt(r['received'])} "
        f"| {'yes' if r['drained'] else 'no'} | {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} "
        f"| {fmt(r['p99_ms'])} | {fmt(r['max_ms'])} | {cell(r, 'lag_growth_per_second')} "
        f"| {cell(r, 'peak_rss_mb')} | {_cpu(r.get('cpu_percent') or {})} "
        f"| {cell(r, 'events_per_batch', 1)} | {cell(r, 'store_commands_per_batch', 2)} "
        f"| {cell(r, 'store_cpu_ms_per_event', 2)} |"
        for r in tu["latency"]
    )
    return [*out, ""]


def tables(tu: dict[str, Any]) -> list[str]:
    return [*_throughput(tu), *_per_event(tu), *_latency(tu)]
