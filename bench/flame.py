"""Collapsed stacks (py-spy's ``raw`` format) → a flame graph (SVG) and the top of the profile.

py-spy samples the consumer from outside (no instrumentation in the process, so the
consumer's own CPU is not inflated by the profiler); its ``raw`` output is one line per
distinct stack, ``frame;frame;...;leaf count``, root first. Both outputs are derived from
that one file: the SVG for reading, the summary (self and total samples per function,
and per area: the consumer's own code, the MongoDB driver, Kafka, asyncio, logging,
metrics) for the report.
"""

from __future__ import annotations

import html
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Stack = tuple[tuple[str, ...], int]

# The area a frame belongs to, by the path in its "function (path)" name; first match wins.
AREAS = (
    ("consumer", ("consumer/",)),
    ("pymongo+bson", ("pymongo/", "bson/")),
    ("aiokafka+kafka", ("aiokafka/", "kafka/")),
    ("logging", ("structlog/", "logging/", "consumer/logs.py")),
    ("prometheus", ("prometheus_client/",)),
    ("asyncio", ("asyncio/", "uvloop/")),
)


def parse(lines: Iterable[str]) -> list[Stack]:
    stacks: list[Stack] = []
    for line in lines:
        text, _, count = line.rstrip("\n").rpartition(" ")
        if text and count.isdigit():
            stacks.append((tuple(text.split(";")), int(count)))
    return stacks


def area_of(frame: str) -> str:
    for name, marks in AREAS:
        if any(m in frame for m in marks):
            return name
    return "other"


def summarize(stacks: list[Stack], top: int = 25) -> dict[str, Any]:
    """Samples in all; the functions with most samples at the top of the stack (self) and
    anywhere in it (total); self samples per area, the leaf's area deciding (the logging
    area is decided by any logging frame on the stack: its cost is the call's)."""
    total = sum(n for _, n in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        area = "logging" if any(area_of(f) == "logging" for f in frames) else area_of(frames[-1])
        if area == "other" and any(area_of(f) == "prometheus" for f in frames):
            area = "prometheus"
        areas[area] += n

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": k, "samples": v, "share": round(v / total, 4)}
            for k, v in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": share(own),
        "total": share(inclusive),
        "areas": {k: round(v / total, 4) for k, v in areas.most_common()},
    }


def text_report(summary: dict[str, Any], title: str) -> str:
    out = [title, f"samples: {summary['samples']}", "", "self share by area:"]
    out += [f"  {v * 100:5.1f} %  {k}" for k, v in summary["areas"].items()]
    for key, label in (("self", "self (top of stack)"), ("total", "total (anywhere on stack)")):
        out += ["", f"{label}:"]
        out += [f"  {r['share'] * 100:5.1f} %  {r['frame']}" for r in summary[key]]
    return "\n".join(out) + "\n"


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def svg(stacks: list[Stack], title: str, width: int = 1200, row: int = 16) -> str:
    """An icicle-style flame graph (root at the top), one rectangle per frame, its
    ``<title>`` giving the function, samples and share (hover in a browser)."""
    root = _Node("all")
    for frames, n in stacks:
        root.count += n
        node = root
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.count += n
    total = max(1, root.count)
    rects: list[str] = []
    depth_max = 0

    def walk(node: _Node, x: float, depth: int) -> None:
        nonlocal depth_max
        w = node.count / total * width
        if w < 0.3:
            return
        depth_max = max(depth_max, depth)
        y = 24 + depth * row
        hue = zlib.crc32(area_of(node.name).encode()) % 360
        light = 55 + zlib.crc32(node.name.encode()) % 20
        label = html.escape(node.name)
        share = 100 * node.count / total
        text = html.escape(node.name[: max(0, int(w / 7))]) if w > 30 else ""
        rects.append(
            f"<g><title>{label} ({node.count} samples, {share:.2f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="hsl({hue},70%,{light}%)"/>'
            f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text></g>'
        )
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            walk(child, child_x, depth + 1)
            child_x += child.count / total * width

    walk(root, 0.0, 0)
    height = 24 + (depth_max + 2) * row
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="monospace" font-size="11">'
        f'<text x="4" y="16" font-size="13">{html.escape(title)}</text>'
        + "".join(rects)
        + "</svg>\n"
    )
