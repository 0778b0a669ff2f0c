"""What a pyinstrument text profile of the consumer says about where its time went.

The consumer is one process with one event loop: wall time is either spent running Python
(its own CPU) or waiting in the selector for replies (MongoDB, Kafka). The share waiting
is what says "the bound is outside this process".
"""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"Duration:\s*([\d.]+)\s+CPU time:\s*([\d.]+)")
# The selector's wait, as pyinstrument names it (epoll on Linux, kqueue/select elsewhere).
_WAIT = re.compile(r"^[\s│├└─]*([\d.]+)\s+(?:epoll\.poll|kqueue\.control|select)\b", re.MULTILINE)
_ENTRY = ("__main__.py", "cli.py", "commands.py")  # entry points: the whole run
_LINE = re.compile(r"^[\s│├└─]*([\d.]+)\s+(\S+)\s+(\S+)$", re.MULTILINE)


def summarize(text: str) -> dict[str, Any]:
    """Wall and CPU seconds, seconds waiting in the selector, and the largest frames of
    the consumer's own code (``consumer/...``), from a ``pyinstrument -r text`` profile."""
    header = _HEADER.search(text)
    wall = float(header.group(1)) if header else None
    cpu = float(header.group(2)) if header else None
    waiting = sum(float(m.group(1)) for m in _WAIT.finditer(text))
    own: dict[str, float] = {}
    for m in _LINE.finditer(text):
        seconds, name, where = float(m.group(1)), m.group(2), m.group(3)
        if (
            where.startswith("consumer/")
            and name != "<module>"
            and not any(x in where for x in _ENTRY)
        ):
            own[name] = max(own.get(name, 0.0), seconds)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:8]
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "waiting_seconds": round(waiting, 3),
        "waiting_share": round(waiting / wall, 3) if wall else None,
        "top_consumer_frames": [{"frame": k, "seconds": v} for k, v in top],
    }
