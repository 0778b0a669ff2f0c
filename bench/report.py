"""Turns ``bench/results/latest.json`` into PNG plots (matplotlib, Agg) and a Markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from bench import goals, report_ticket_used, store_ops
from bench.report_ticket_used import fmt as _fmt


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    summary = results["ticket_used"]["summary"]["events_per_second"]
    dists = list(summary)
    pipelines = sorted({p for rates in summary.values() for p in rates})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(pipelines)
    for i, p in enumerate(pipelines):
        values = [summary[d].get(p) or 0 for d in dists]
        xs = [j + i * width for j in range(len(dists))]
        bars = ax.bar(xs, values, width, label=p)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks([j + width for j in range(len(dists))], dists)
    ax.set_ylabel("events/s (drain of pre-produced events)")
    ax.set_title("Ticket-used throughput at saturation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    rows = results["ticket_used"]["latency"]
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"p50_ms": ":", "p95_ms": "--", "p99_ms": "-"}
    names = sorted({r["pipeline"] for r in rows})
    colors = {p: f"C{i}" for i, p in enumerate(names)}
    for pipeline, color in colors.items():
        mine = sorted(
            (r for r in rows if r["pipeline"] == pipeline), key=lambda r: r["offered_rate"]
        )
        if not mine:
            continue
        for key, style in styles.items():
            xs = [r["offered_rate"] for r in mine]
            ys = [r[key] for r in mine]
            ax.plot(xs, ys, style, marker="o", color=color, label=f"{pipeline} {key[:3]}")
    ax.set_yscale("log")
    for goal_ms in (50, 250, 1000):  # issue 20's p50 and p99 goals at 50 % and 80 %
        ax.axhline(goal_ms, color="grey", linewidth=0.6)
    ax.set_xlabel("offered rate (events/s)")
    ax.set_ylabel("input → status-change latency (ms)")
    ax.set_title("Latency percentiles against offered rate")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweeps(results: dict[str, Any], path: Path) -> None:
    rows = results["sweeps"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["users"] for r in rows]
    ax.plot(xs, [r["due"]["seconds"] for r in rows], marker="o", label="due tick (1 % due)")
    ax.plot(
        xs,
        [r["due_fixed"]["seconds"] for r in rows],
        marker="o",
        label="due tick (min(100, 1 %) due)",
    )
    ax.plot(xs, [r["full"]["seconds"] for r in rows], marker="o", label="full apply check")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users")
    ax.set_ylabel("seconds")
    ax.set_title("Sweep time against users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(results: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if results.get("ticket_used"):
        for name, fn in (("throughput", plot_throughput), ("latency", plot_latency)):
            path = directory / f"bench-{name}.png"
            fn(results, path)
            made.append(path)
    if results.get("sweeps"):
        path = directory / "bench-sweeps.png"
        plot_sweeps(results, path)
        made.append(path)
    return made


def _stages(results: dict[str, Any]) -> list[str]:
    stages = results.get("stages") or {}
    if not stages:
        return []
    out = ["### How long each stage took", "", "| stage | started (UTC) | seconds | complete |"]
    out.append("|---|---|---:|---|")
    for name, st in stages.items():
        out.append(
            f"| {name} | {st.get('started_at', '')} | {_fmt(st.get('seconds'), 1)} "
            f"| {'yes' if st.get('complete') else 'no'} |"
        )
    return [*out, ""]


def _seeding(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, dict[str, Any]]] = [
        (f"ticket-used ({s.get('pipeline', '?')})", s)
        for s in (results.get("ticket_used") or {}).get("seeding", [])
    ]
    rows += [("sweeps", s["seed"]) for s in results.get("sweeps") or [] if "seed" in s]
    rows += [
        ("single operations", s["seed"]) for s in results.get("store_ops") or [] if "seed" in s
    ]
    if not rows:
        return []
    out = [
        "### Seeding (bulk `insert_many`, unordered, 10,000 a call; then the service's indexes)",
        "",
        "| for | users | insert s | index s | total s | users/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in rows:
        out.append(
            f"| {name} | {_fmt(s['users'])} | {_fmt(s.get('insert_seconds'), 1)} "
            f"| {_fmt(s.get('index_seconds'), 1)} | {_fmt(s.get('seconds'), 1)} "
            f"| {_fmt(s.get('users_per_second'))} |"
        )
    return [*out, ""]


def _profile(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not prof or not prof.get("summary"):
        return []
    s, d = prof["summary"], prof["drain"]
    cpu = d.get("cpu_percent", {})
    frames = ", ".join(f"`{f['frame']}` {f['seconds']:.1f} s" for f in s["top_consumer_frames"])
    return [
        "### Profile of a service drain (pyinstrument, uniform)",
        "",
        (
            f"`{prof['file']}`: {_fmt(d['events_per_second'])} events/s; wall "
            f"{_fmt(s['wall_seconds'], 1)} s, consumer CPU {_fmt(s['cpu_seconds'], 1)} s, waiting "
            f"for replies {_fmt(s['waiting_seconds'], 1)} s "
            f"({_fmt(100 * (s['waiting_share'] or 0), 0)} %). CPU during the drain (% of one "
            f"core): consumer {_fmt(cpu.get('pipeline'))}, store {_fmt(cpu.get('store'))}, Kafka "
            f"{_fmt(cpu.get('kafka'))}, whole machine {_fmt(cpu.get('machine'))}. Largest frames "
            f"of the consumer's own code: {frames}."
        ),
        "",
    ]


def store_line(store: dict[str, Any]) -> str:
    """What answered as the store; a local Go server's collector setting moved its CPU per
    event by 22 %, so it is named when known."""
    line = f"Store: {store.get('server', 'unknown')} at `{store.get('uri', '?')}`"
    return line + (f", its Go collector at `GOGC={store['gogc']}`." if store.get("gogc") else ".")


def tables(results: dict[str, Any]) -> str:
    """Markdown tables of every figure in ``results``, the goals first."""
    store = results.get("store") or {}
    out: list[str] = [
        "### Goals of issues 14 and 20, as measured",
        "",
        store_line(store),
        "",
        goals.table(goals.goals(results)),
        "",
        *_stages(results),
        *_seeding(results),
    ]
    tu = results.get("ticket_used")
    if tu:
        out += report_ticket_used.tables(tu)
    out += _profile(results)
    sweeps = results.get("sweeps")
    if sweeps:
        out += [
            "### Sweeps (1 % of users due, half of the others holding only expired passes)",
            "",
            (
                "| users | sweep | due users | seconds | documents read | changed "
                "| peak RSS MB | longest loop stall ms | CPU s |"
            ),
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in sweeps:
            due_counts = {
                "due": s.get("due_users"),
                "full": s.get("due_users"),
                "due_fixed": s.get("fixed_due_users"),
            }
            for kind in ("due", "due_fixed", "full"):  # the order they run in
                r = s[kind]
                label = {"due": "due (1 %)", "full": "full check", "due_fixed": "due (fixed)"}
                out.append(
                    f"| {_fmt(s['users'])} | {label[kind]} | {_fmt(due_counts[kind])} "
                    f"| {_fmt(r['seconds'], 2)} | {_fmt(r.get('documents_read'))} "
                    f"| {_fmt(r.get('documents_changed'))} | {_fmt(r.get('peak_rss_mb'))} "
                    f"| {_fmt(r.get('longest_stall_ms'))} | {_fmt(r.get('cpu_seconds'), 1)} |"
                )
                if "error" in r:
                    out.append(f"| {_fmt(s['users'])} | {label[kind]} failed: {r['error']} |")
        out.append("")
    if results.get("store_ops"):
        out += [
            "### One MongoDB operation, by filter shape (median)",
            "",
            (
                "The last two rows go through the service's own store adapter and client (socket "
                "timeout 10 s by default): *failed* means no answer within it."
            ),
            "",
            store_ops.table(results["store_ops"]),
            "",
        ]
    return "\n".join(out)
