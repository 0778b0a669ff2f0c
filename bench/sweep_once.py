"""One sweep in a process of its own: ``python -m bench.sweep_once due|full``.

Builds the service's core from the ``PASS_STATUS_*`` variables (consumer.app.core) and runs
:meth:`Sweeper.due` (``tick_at`` = now, apply) or :meth:`Sweeper.full` (all users, apply),
then prints one JSON line: seconds, documents_read, documents_changed, transitions. The
parent reads the process's peak RSS with ``os.wait4``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
from consumer.app import core
from consumer.domain.events import Cause, CauseType
from consumer.settings import Settings


async def sweep(mode: str) -> dict[str, float | int]:
    settings = Settings.from_env(os.environ)
    async with core(settings) as c:
        await c.store.ensure_indexes()
        await c.producer.start()
        cause = Cause(CauseType.TICK, f"bench-{uuid.uuid4()}")
        now = datetime.now(UTC)
        started = time.perf_counter()
        if mode == "due":
            result = await c.sweeper.due(now, 0, 1, True, cause)
        else:
            result = await c.sweeper.full(None, True, now, cause)
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "documents_read": result.documents_read,
        "documents_changed": result.documents_changed,
        "transitions": result.transitions,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in {"due", "full"}:
        sys.stderr.write("usage: python -m bench.sweep_once due|full\n")
        return 2
    sys.stdout.write(orjson.dumps(asyncio.run(sweep(args[0]))).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
