"""Check-log summaries: written to MongoDB in the old job's shape and published to Kafka."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from consumer.adapters.kafka import OutRecord, Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import CacheStore
from consumer.domain.checklog import UserLog, check_log_documents
from consumer.logs import get_logger

log = get_logger(__name__)


class CheckLogSink:
    def __init__(
        self, store: CacheStore, publisher: Publisher, metrics: Metrics, topic: str, max_bytes: int
    ) -> None:
        # The same parts go to MongoDB and to Kafka, so they are sized for the smaller
        # limit: a broker's default max.message.bytes (~1 MB), not MongoDB's 16 MB.
        self._max_bytes = max_bytes
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic

    async def write(
        self,
        check_time: datetime,
        check_user: int | None,
        edit_mode: bool,
        logs: Iterable[UserLog],
        kind: str,
        traceparent: str = "",
    ) -> list[dict[str, Any]]:
        """Write the check-log document(s) of one check; returns them as written. A
        ``traceparent`` (the causing tick's) is published as a header of every part."""
        documents = check_log_documents(check_time, check_user, edit_mode, logs, self._max_bytes)
        written: list[dict[str, Any]] = []
        for document in documents:
            document["_id"] = await self._store.insert_check_log(document)
            written.append(document)
        await self._publisher.publish(
            [
                OutRecord(
                    self._topic,
                    str(check_user or 0).encode(),
                    orjson.dumps(d),
                    (("traceparent", traceparent.encode()),) if traceparent else (),
                )
                for d in written
            ]
        )
        self._metrics.check_logs_written.labels(kind).inc(len(written))
        log.info(
            "check_log_written",
            kind=kind,
            check_id=written[0]["_id"] if written else None,
            parts=len(written),
            users=sum(len(d["log"]) for d in written),
            edit_mode=edit_mode,
        )
        return written


class IntervalSummary:
    """Collects the transitions made during one interval, merged per user."""

    def __init__(self) -> None:
        self._by_user: dict[int, tuple[list[tuple[str, str]], list[tuple[str | None, str]]]] = {}

    def add(self, entry: UserLog | None) -> None:
        if entry is None or not entry.invalid_list:
            return
        invalid, skipped = self._by_user.setdefault(entry.user_id, ([], []))
        invalid.extend(entry.invalid_list)
        skipped.extend(s for s in entry.skipped_list if s not in skipped)

    def __len__(self) -> int:
        return len(self._by_user)

    def drain(self) -> list[UserLog]:
        """The collected logs, and a fresh start for the next interval."""
        drained = [
            UserLog(user_id, tuple(invalid), tuple(skipped))
            for user_id, (invalid, skipped) in sorted(self._by_user.items())
        ]
        self._by_user = {}
        return drained
