"""Readiness probes for the local services, used by ``scripts/services``.

Usage::

    python scripts/lib/wait_ready.py kafka BOOTSTRAP [--timeout S] [--log FILE] [--pid PID]
    python scripts/lib/wait_ready.py mongodb URI [--timeout S] [--log FILE] [--pid PID]
    python scripts/lib/wait_ready.py mask URI

A probe is a real client request (Kafka: a metadata request that lists brokers
and topics; MongoDB: ``ping`` and ``buildInfo``), repeated until it succeeds or
the timeout passes. Exit 0 and one line describing the server when ready; exit 1
and one line naming the log file when not. Passwords in URIs are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def mask(uri: str) -> str:
    """Replace the password of ``scheme://user:pass@host`` with ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)


async def _kafka_once(bootstrap: str, request_timeout_ms: int, brokers_wanted: int = 1) -> str:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - keep `mask` import-light

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=request_timeout_ms,
        client_id="pass-status-wait-ready",
    )
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        topics: list[str] = await admin.list_topics()
    finally:
        await admin.close()
    brokers = cluster.get("brokers") or []
    if not brokers:
        raise RuntimeError("metadata response lists no brokers")
    if len(brokers) < brokers_wanted:
        raise RuntimeError(f"{len(brokers)} of {brokers_wanted} brokers registered")
    return (
        f"cluster {cluster.get('cluster_id')}, {len(brokers)} broker(s), "
        f"controller {cluster.get('controller_id')}, {len(topics)} topic(s)"
    )


def _mongodb_once(uri: str, timeout_ms: int) -> str:
    from pymongo import MongoClient  # noqa: PLC0415 - keep `mask` import-light

    client: MongoClient[dict[str, Any]] = MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="pass-status-wait-ready",
    )
    try:
        client.admin.command("ping")
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    version = info.get("version", "?")
    ferret = info.get("ferretdbVersion")
    return f"MongoDB wire version {version}" + (f" (FerretDB {ferret})" if ferret else "")


def _probe(kind: str, target: str, attempt_timeout_s: float, brokers: int = 1) -> str:
    ms = max(500, int(attempt_timeout_s * 1000))
    if kind == "kafka":
        return asyncio.run(_kafka_once(target, ms, brokers))
    return _mongodb_once(target, ms)


def _gone(pid: int | None) -> bool:
    return pid is not None and not Path(f"/proc/{pid}").exists()


def wait_ready(
    kind: str,
    target: str,
    timeout_s: float,
    log: str | None,
    pid: int | None = None,
    brokers: int = 1,
) -> int:
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt made"
    where = f"; see {log}" if log else ""
    while True:
        if _gone(pid):
            print(f"{kind} process {pid} exited before it was ready{where}", file=sys.stderr)
            return 1
        remaining = deadline - time.monotonic()
        try:
            detail = _probe(kind, target, min(5.0, max(1.0, remaining)), brokers)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        else:
            print(f"{kind} ready at {mask(target)}: {detail}")
            return 0
        if time.monotonic() >= deadline:
            print(
                f"{kind} at {mask(target)} not ready after {timeout_s:.0f}s "
                f"(last error: {mask(last_error)}){where}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["kafka", "mongodb", "mask"])
    parser.add_argument("target", help="Kafka bootstrap servers or MongoDB URI")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--log", default=None, help="log file to point at on failure")
    parser.add_argument("--pid", type=int, default=None, help="fail fast if this process exits")
    parser.add_argument(
        "--brokers", type=int, default=1, help="Kafka: ready once this many brokers registered"
    )
    args = parser.parse_args(argv)
    # aiokafka logs every refused connection; the final one-line verdict is enough.
    quiet = logging.getLogger("aiokafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    if args.kind == "mask":
        print(mask(args.target))
        return 0
    return wait_ready(args.kind, args.target, args.timeout, args.log, args.pid, args.brokers)


if __name__ == "__main__":
    sys.exit(main())
