"""The goals of issues 14 and 20, each measured against its figure in a results file.

Pure functions of the results dictionary (``bench/results/latest.json``), so that the
verdicts can be recomputed from any saved run. Where a goal is missed, :func:`goals` says
what bounds the figure, from what the same run measured: CPU of the pipeline, the store,
Kafka and the whole machine during the drains, the profile's share of time spent waiting
for replies, documents read by the sweeps, memory and event-loop stalls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FULL_SIZE = 1_000_000  # the sweep goals are stated at this number of users


@dataclass(frozen=True, slots=True)
class Goal:
    figure: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    bound: str = ""  # what bounds the figure, when the goal is missed


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _show(value: Any, unit: str) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:,.0f} {unit}"


def _drains(results: dict[str, Any], pipeline: str) -> list[dict[str, Any]]:
    tu = results.get("ticket_used") or {}
    return [d for d in tu.get("throughput", []) if d["pipeline"] == pipeline]


def cpu_bound(drain: dict[str, Any], nproc: int, during: str | None = None) -> str:
    """What held a drain (or a latency point, ``during``) back, from the CPU (% of one
    core) each process used during it."""
    cpu = drain.get("cpu_percent", {})
    pipeline, store, kafka = (cpu.get(k, 0.0) for k in ("pipeline", "store", "kafka"))
    machine = cpu.get("machine")
    used = pipeline + store + kafka
    share = f"{100 * store / used:.0f} %" if used else "n/a"
    detail = (
        f"CPU during {during or 'the ' + drain['distribution'] + ' drain'}: "
        f"{drain['pipeline']} {pipeline:.0f} %, "
        f"store {store:.0f} %, Kafka {kafka:.0f} % of a core; store share {share} of the three"
    )
    if machine is not None:
        detail += f"; whole machine {machine:.0f} % of {100 * nproc} %"
    if machine is not None and machine >= 0.9 * 100 * nproc:
        return f"the machine's CPU is saturated ({detail})"
    if store >= 85 and store >= pipeline:
        return f"the store's CPU ({detail})"
    if pipeline >= 85:
        return f"the {drain['pipeline']} process's CPU: one event loop ({detail})"
    return f"round trips, no process near a full core ({detail})"


def _throughput(results: dict[str, Any], nproc: int) -> list[Goal]:
    tu = results.get("ticket_used")
    if not tu:
        return [
            Goal("service / naive throughput", "≥ 10x", "not measured", None),
            Goal("service / passthrough", "≥ 0.5x, or store-bound", "not measured", None),
        ]
    ratios: dict[str, dict[str, float | None]] = tu["summary"]["ratios"]
    rates: dict[str, dict[str, float]] = tu["summary"]["events_per_second"]
    service = _drains(results, "service")
    bound = cpu_bound(service[0], nproc) if service else ""  # the first (uniform) drain

    def show(key: str) -> tuple[str, list[float]]:
        parts, values = [], []
        for dist, r in ratios.items():
            v = _num(r.get(key))
            base = key.split("/")[1]
            parts.append(
                f"{dist} {'n/a' if v is None else f'{v:,.2f}x'} "
                f"({rates[dist].get('service', 0):,.0f} vs {rates[dist].get(base, 0):,.0f} ev/s)"
            )
            if v is not None:
                values.append(v)
        return "; ".join(parts), values

    naive_text, naive = show("service/naive")
    met_naive = bool(naive) and min(naive) >= 10
    goals = [
        Goal(
            "service / naive throughput",
            "≥ 10x",
            naive_text,
            met_naive if naive else None,
            "" if met_naive else bound,
        )
    ]
    pass_text, passes = show("service/passthrough")
    prof = (results.get("profile") or {}).get("summary") or {}
    prof_drain = (results.get("profile") or {}).get("drain") or {}
    waiting = _num(prof.get("waiting_share"))
    pcpu = prof_drain.get("cpu_percent", {})
    store_cpu, pipe_cpu = pcpu.get("store", 0.0), pcpu.get("pipeline", 0.0)
    by_ratio = bool(passes) and min(passes) >= 0.5
    # "or a profile that shows the store's CPU is the bound": the consumer waits for
    # replies most of the time and the store burns more CPU than the consumer does.
    by_profile = waiting is not None and waiting >= 0.6 and store_cpu >= 2 * max(pipe_cpu, 1)
    evidence = ""
    if waiting is not None:
        evidence = (
            f"profile: {100 * waiting:.0f} % of the consumer's wall time waiting for replies; "
            f"CPU in the profiled drain: store {store_cpu:.0f} %, consumer {pipe_cpu:.0f} % "
            f"of a core"
        )
    met = by_ratio or by_profile
    goals.append(
        Goal(
            "service / passthrough",
            "≥ 0.5x, or a profile showing the store's CPU is the bound",
            pass_text + (f"; {evidence}" if evidence else ""),
            met if passes else None,
            ("met by the profile: " + bound)
            if (by_profile and not by_ratio)
            else ("" if met else bound),
        )
    )
    return goals


def _latency(results: dict[str, Any], nproc: int) -> Goal:
    tu = results.get("ticket_used") or {}
    # the fixed rates: the saturation point (older results: every row was a fixed rate)
    rows = [
        r
        for r in tu.get("latency", [])
        if r["pipeline"] == "service" and r.get("kind", "saturation") == "saturation"
    ]
    at = [r for r in rows if r["offered_rate"] == 1000]
    name, goal = "p99 latency, event to status change, at 1,000 events/s", "≤ 100 ms"
    if not at:
        offered = sorted({r["offered_rate"] for r in rows})
        text = "1,000/s not offered" + (f" (offered {offered})" if offered else "")
        last = max(rows, key=lambda x: x["offered_rate"]) if rows else None
        if last is None or last["drained"] or last["offered_rate"] > 1000:
            return Goal(name, goal, text, None)
        # saturated below 1,000/s: the higher rates were skipped, and cannot be met
        service = _drains(results, "service")
        best = max((d["events_per_second"] for d in service), default=0.0)
        return Goal(
            name,
            goal,
            f"{text}: saturated at {last['offered_rate']:,}/s (p99 {last['p99_ms']:,.0f} ms)",
            False,
            f"throughput: the service drains at most {best:,.0f} events/s"
            + (f"; {cpu_bound(service[0], nproc)}" if service else ""),
        )
    r = max(at, key=lambda x: x["p99_ms"])
    text = (
        f"p99 {r['p99_ms']:,.0f} ms (p50 {r['p50_ms']:,.0f}, max {r['max_ms']:,.0f}; "
        f"{r['received']:,}/{r['sent']:,} at {r['achieved_rate']:,.0f}/s achieved"
        f"{'' if r['drained'] else ', not drained'})"
    )
    met = r["drained"] and r["p99_ms"] <= 100
    bound = ""
    if not met:
        service = _drains(results, "service")
        best = max((d["events_per_second"] for d in service), default=0.0)
        if not r["drained"] or best < 1000:
            bound = f"throughput: the service drains at most {best:,.0f} events/s" + (
                f"; {cpu_bound(service[0], nproc)}" if service else ""
            )
        else:
            bound = (
                "per-batch round trips (read, conditional write, publish, commit) at "
                f"p50 {r['p50_ms']:,.0f} ms while the service drains {best:,.0f} events/s"
            )
    return Goal(name, goal, text, met, bound)


def _sweep_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(results.get("sweeps") or [], key=lambda r: r["users"])


def _at(users: int) -> str:
    return f"at {users:,} users" + ("" if users >= FULL_SIZE else f" (goal is at {FULL_SIZE:,})")


def _failed(sweep: dict[str, Any]) -> bool:
    return "error" in sweep


GROWTH = "due sweep with a fixed number of users due, 10k → 1M users"
RATIO = "due sweep vs full check at 1M users"
FULL = "full check at 1M users"
FULL_GOAL = "peak RSS ≤ 150 MB; longest event-loop stall ≤ 100 ms"
_DUE_QUERY = (
    "the store's answer to the due query: it did not return within the client's socket "
    "timeout although few users are due, so the store reads beyond the due range (compare "
    "the next_check_at range alone in the single-operation table)"
)


def _growth(rows: list[dict[str, Any]]) -> Goal:
    done = [r for r in rows if not _failed(r["due_fixed"])]
    failed = next((r for r in rows if _failed(r["due_fixed"])), None)
    if failed is not None:
        before = (
            f"; {done[-1]['due_fixed']['seconds']:,.2f} s at {done[-1]['users']:,}" if done else ""
        )
        return Goal(
            GROWTH,
            "grows < 2x",
            f"the due sweep ({failed['fixed_due_users']} due) failed at "
            f"{failed['users']:,} users: {failed['due_fixed']['error']}{before}",
            False,
            _DUE_QUERY,
        )
    # compare sizes with the same number due (a size under 10,000 has fewer than 100 due)
    done = [r for r in done if done and r["fixed_due_users"] == done[-1]["fixed_due_users"]]
    if len(done) < 2:
        return Goal(GROWTH, "grows < 2x", "not measured (no two sizes with as many due)", None)
    small, large = done[0], done[-1]
    s_fix, l_fix = small["due_fixed"], large["due_fixed"]
    growth = l_fix["seconds"] / s_fix["seconds"] if s_fix["seconds"] else math.inf
    text = (
        f"{growth:,.2f}x ({s_fix['seconds']:,.2f} s at {small['users']:,} → "
        f"{l_fix['seconds']:,.2f} s at {large['users']:,}; documents read "
        f"{s_fix['documents_read']:,} → {l_fix['documents_read']:,} for "
        f"{large['fixed_due_users']:,} due)"
    )
    met = growth < 2
    bound = ""
    if not met:
        if (l_fix["documents_read"] or 0) > 2 * large["fixed_due_users"]:
            bound = (
                f"the due query reads {l_fix['documents_read']:,} documents for "
                f"{large['fixed_due_users']:,} due: it selects more than what is due"
            )
        else:
            bound = (
                "the same documents are read at every size, so the time that grows is the "
                "store's: its query plan scans more than the due range (see the "
                "next_check_at row of the single-operation table)"
            )
    if large["users"] < FULL_SIZE:
        text += f" (goal is from 10,000 to {FULL_SIZE:,})"
    return Goal(GROWTH, "grows < 2x", text, met if large["users"] >= FULL_SIZE else None, bound)


def _full_failed(row: dict[str, Any]) -> list[Goal]:
    full = row["full"]
    # A check that cannot complete at a smaller size cannot meet the goal at 1,000,000.
    text = f"the full check did not complete {_at(row['users'])}: {full['error']}"
    return [
        Goal(RATIO, "≥ 30x faster", text, False, _STORE_SORT),
        Goal(FULL, FULL_GOAL, text, False, _STORE_SORT),
    ]


def _ratio_goal(row: dict[str, Any]) -> Goal:
    full, fixed = row["full"], row["due_fixed"]
    if _failed(fixed):
        return Goal(
            RATIO,
            "≥ 30x faster",
            f"the due sweep failed {_at(row['users'])}: {fixed['error']}",
            False,
            _DUE_QUERY,
        )
    ratio = full["seconds"] / fixed["seconds"] if fixed["seconds"] else math.inf
    return Goal(
        RATIO,
        "≥ 30x faster",
        f"{ratio:,.1f}x ({fixed['seconds']:,.2f} s for {row['fixed_due_users']:,} due "
        f"vs {full['seconds']:,.2f} s for {full['documents_read']:,} users) "
        + _at(row["users"])
        + f"; with 1 % due ({row['due_users']:,}): {_show(row['due'].get('seconds'), 's')}",
        ratio >= 30 if row["users"] >= FULL_SIZE else None,
        ""
        if ratio >= 30
        else f"the due sweep's cost per due user: {fixed['seconds']:,.2f} s for "
        f"{row['fixed_due_users']} due users, read {fixed['documents_read']:,}",
    )


def _full_goal(rows: list[dict[str, Any]], row: dict[str, Any]) -> Goal:
    full = row["full"]
    done = [r for r in rows if not _failed(r["full"])]
    rss, stall = _num(full.get("peak_rss_mb")), _num(full.get("longest_stall_ms"))
    sizes = ", ".join(f"{r['users']:,}" for r in done)
    rss_growth = ", ".join(_show(r["full"].get("peak_rss_mb"), "MB") for r in done)
    stalls = ", ".join(_show(r["full"].get("longest_stall_ms"), "ms") for r in done)
    met = rss is not None and stall is not None and rss <= 150 and stall <= 100
    bounds = []
    if rss is not None and rss > 150:
        bounds.append(
            f"memory grows with the users checked ({rss_growth} at {sizes} users): "
            "the sweep holds per-user state (check-log entries) until it ends"
        )
    if stall is not None and stall > 100:
        bounds.append(
            f"one synchronous step of {stall:,.0f} ms on the event loop "
            f"({full.get('stalls_over_100ms', '?')} stalls over 100 ms; longest by size: {stalls})"
        )
    return Goal(
        FULL,
        FULL_GOAL,
        f"peak RSS {_show(rss, 'MB')}, longest stall {_show(stall, 'ms')}, "
        f"{full['seconds']:,.1f} s " + _at(row["users"]),
        met if row["users"] >= FULL_SIZE else None,
        "; ".join(bounds),
    )


def _sweeps(results: dict[str, Any]) -> list[Goal]:
    rows = _sweep_rows(results)
    growth = _growth(rows)
    if not rows:
        return [
            growth,
            Goal(RATIO, "≥ 30x faster", "not measured", None),
            Goal(FULL, FULL_GOAL, "not measured", None),
        ]
    # The full check: at the largest size where it ran (skipped sizes are not measured).
    ran = [r for r in rows if not r["full"].get("skipped")]
    row = ran[-1] if ran else rows[-1]
    if _failed(row["full"]):
        return [growth, *_full_failed(row)]
    return [growth, _ratio_goal(row), _full_goal(rows, row)]


_STORE_SORT = (
    "the store: the full check reads every user sorted by user_id; a store that sorts the "
    "whole collection before returning the first batch (FerretDB without sort pushdown) "
    "exceeds the client's socket timeout"
)


def _rss(results: dict[str, Any]) -> Goal:
    tu = results.get("ticket_used") or {}
    drains = [d["peak_rss_mb"] for d in _drains(results, "service")]
    latency = _num((tu.get("latency_peak_rss_mb") or {}).get("service"))
    values = drains + ([latency] if latency is not None else [])
    if not values:
        return Goal("consumer RSS under load", "≤ 150 MB", "not measured", None)
    peak = max(values)
    return Goal(
        "consumer RSS under load",
        "≤ 150 MB",
        f"{peak:,.0f} MB peak (drains: "
        + ", ".join(f"{v:,.0f}" for v in drains)
        + (f"; latency run {latency:,.0f}" if latency is not None else "")
        + " MB)",
        peak <= 150,
        "" if peak <= 150 else "the consumer's batches in flight (see the profile)",
    )


def goals(results: dict[str, Any]) -> list[Goal]:
    """Issue 14's goals, then issue 20's (:mod:`bench.goals_cost`)."""
    from bench import goals_cost  # noqa: PLC0415 - it builds on this module

    nproc = int((results.get("machine") or {}).get("nproc") or 1)
    return [
        *_throughput(results, nproc),
        _latency(results, nproc),
        *_sweeps(results),
        _rss(results),
        *goals_cost.goals(results, nproc),
    ]


def table(items: Sequence[Goal]) -> str:
    """Markdown: figure, goal, measured, met, what bounds it."""
    lines = [
        "| figure | goal | measured | met? | what bounds it (when missed) |",
        "|---|---|---|---|---|",
    ]
    verdict = {True: "**yes**", False: "**no**", None: "not measured"}
    lines.extend(
        f"| {g.figure} | {g.goal} | {g.measured} | {verdict[g.met]} | {g.bound} |" for g in items
    )
    return "\n".join(lines)
