"""The py-spy profile's reading: self and total shares, areas, and the flame graph."""

from __future__ import annotations

from bench import flame

RAW = [
    "main (consumer/cli.py);handle (consumer/service/ticket_used.py);emit (logging/__init__.py) 3",
    "main (consumer/cli.py);handle (consumer/service/ticket_used.py) 1",
    "main (consumer/cli.py);update_one (pymongo/collection.py);write (asyncio/selector.py) 6",
    "not a stack line",
]


def test_summary_counts_self_and_total_samples_and_areas() -> None:
    summary = flame.summarize(flame.parse(RAW))
    assert summary["samples"] == 10
    own = {r["frame"]: r["samples"] for r in summary["self"]}
    assert own["write (asyncio/selector.py)"] == 6
    assert own["handle (consumer/service/ticket_used.py)"] == 1
    total = {r["frame"]: r["samples"] for r in summary["total"]}
    assert total["main (consumer/cli.py)"] == 10
    assert total["handle (consumer/service/ticket_used.py)"] == 4
    # logging anywhere on the stack charges the sample to logging
    assert summary["areas"] == {"asyncio": 0.6, "logging": 0.3, "consumer": 0.1}


def test_flame_graph_has_one_titled_rectangle_per_frame() -> None:
    svg = flame.svg(flame.parse(RAW), "t")
    assert svg.startswith("<svg")
    assert svg.count("<rect") == 6  # root + 5 distinct frames
    assert "update_one (pymongo/collection.py) (6 samples, 60.00%)" in svg
