"""Counting the commands sent to MongoDB: one per round trip, by command name.

``pass_status_mongodb_operation_duration_seconds`` times the store's operations; one of
them can be several commands (a batched read is a ``find`` and its ``getMore``s; clearing
outboxes can take up to three bulk ``update`` commands). The round trips are what a server's
load and a batch's latency scale with, so they are counted from the driver itself.
"""

from __future__ import annotations

from pymongo import monitoring

from consumer.adapters.metrics import Metrics


class CommandCounter(monitoring.CommandListener):
    """A PyMongo command listener feeding ``pass_status_mongodb_commands_total``."""

    def __init__(self, metrics: Metrics) -> None:
        self._commands = metrics.mongodb_commands

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # Command names are the driver's own, a small fixed set: a safe label.
        self._commands.labels(event.command_name).inc()

    # The listener interface requires these two; a command is counted when it starts.
    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:  # noqa: ARG002
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:  # noqa: ARG002
        return None
