"""Liveness and readiness state, shared by the consume loop and the HTTP server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Health:
    """Mutable health facts; the loop sets them, ``/readyz`` reads them."""

    started: bool = False
    joined_group: bool = False
    assigned_partitions: int = 0
    mongodb_ok: bool = False
    kafka_ok: bool = False
    backing_off: bool = False
    stopping: bool = False
    last_error: str = ""
    heartbeat: float = field(default_factory=time.monotonic)

    def ready(self) -> bool:
        """Ready: in the group, both stores reachable, not backing off, not stopping.

        A replica with no partitions (more replicas than partitions) is still ready: it
        is a healthy standby, and alerting on it would page for nothing.
        """
        return (
            self.started
            and self.joined_group
            and self.mongodb_ok
            and self.kafka_ok
            and not self.backing_off
            and not self.stopping
        )

    def alive(self, max_stall_seconds: float = 30.0) -> bool:
        return time.monotonic() - self.heartbeat < max_stall_seconds

    def report(self) -> dict[str, object]:
        return {
            "ready": self.ready(),
            "started": self.started,
            "joined_group": self.joined_group,
            "assigned_partitions": self.assigned_partitions,
            "mongodb_ok": self.mongodb_ok,
            "kafka_ok": self.kafka_ok,
            "backing_off": self.backing_off,
            "stopping": self.stopping,
            "last_error": self.last_error,
        }
