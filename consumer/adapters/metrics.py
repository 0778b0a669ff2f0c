"""Prometheus metrics, registered on an injected registry.

Label values are bounded sets (topics, statuses, reason codes, operation names); no user
or pass identifier ever becomes a label.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from consumer import __version__
from consumer.build import REVISION
from consumer.errors import InputError


def _all_subclasses(cls: type[InputError]) -> list[type[InputError]]:
    found: list[type[InputError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
SWEEP_MODES = ("due", "full")
DEAD_LETTER_REASONS = tuple(
    sorted(
        {cls.reason for cls in _all_subclasses(InputError)}
        # internal_error: consumer.policy's Fault.BUG; tick_failed: the same, before 0.19
        | {InputError.reason, "internal_error", "tick_failed"}
    )
)
_LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REBALANCE_KINDS = ("assigned", "revoked")
KAFKA_OPERATIONS = ("publish", "commit", "fetch")
INTERVAL_DROP_REASONS = ("overflow", "shutdown")
_SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class Metrics:
    """Every metric of the service; one instance per process, on the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        _register_runtime_collectors(registry)
        p = "pass_status_"
        self.build_info = Gauge(
            p + "build_info",
            "Build information; the value is always 1.",
            ["version", "revision", "python_version"],
            registry=registry,
        )
        self.build_info.labels(__version__, REVISION, platform.python_version()).set(1)
        self.event_loop_lag = Histogram(
            p + "event_loop_lag_seconds",
            "How much later than asked the event loop ran a 0.1 s timer: time other work held it.",
            buckets=_LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.rebalances = Counter(
            p + "rebalances_total",
            "Consumer-group rebalance callbacks, by kind (assigned, revoked).",
            ["kind"],
            registry=registry,
        )
        self.events_consumed = Counter(
            p + "events_consumed_total",
            "Input events consumed, by topic and outcome (applied, no_change, dead_lettered).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.transitions = Counter(
            p + "transitions_total",
            "Pass status transitions written, by from/to status and cause "
            "(ticket_used, tick_due, tick_full, check).",
            ["from_status", "to_status", "cause"],
            registry=registry,
        )
        self.dead_letters = Counter(
            p + "dead_letters_total",
            "Input events sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            p + "batch_size_events",
            "Number of records in one fetched batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_duration = Histogram(
            p + "batch_duration_seconds",
            "Time from receiving a batch to committing its offsets.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            p + "end_to_end_latency_seconds",
            "Time from a status change's cause to its publication, by cause: ticket_used (the"
            " event's timestamp), tick_due and tick_full (the time the tick asked for).",
            ["cause"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag_messages",
            "Messages between the committed position and the end of each assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.consumer_lag_seconds = Gauge(
            p + "consumer_lag_seconds",
            "Age of the input a partition has not consumed: now minus the event time of the"
            " newest record this replica handled from it while the partition has lag, 0 without"
            " lag (absent until the replica has handled a record of it, and while a tick's sweep"
            " runs on it).",
            ["topic", "partition"],
            registry=registry,
        )
        self.last_commit = Gauge(
            p + "last_commit_timestamp_seconds",
            "Unix time at which the committed offset of each assigned partition last advanced,"
            " as seen by this replica (its assignment time until its first commit; now while a"
            " tick's sweep runs on it, as that partition is committed when the sweep ends).",
            ["topic", "partition"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            p + "assigned_partitions",
            "Partitions currently assigned to this consumer.",
            registry=registry,
        )
        self.sweep_duration = Histogram(
            p + "sweep_duration_seconds",
            "Duration of one tick sweep, by mode (due, full).",
            ["mode"],
            buckets=_SWEEP_BUCKETS,
            registry=registry,
        )
        self.sweep_documents_read = Counter(
            p + "sweep_documents_read_total",
            "Cache documents read by tick sweeps, by mode.",
            ["mode"],
            registry=registry,
        )
        self.sweep_documents_changed = Counter(
            p + "sweep_documents_changed_total",
            "Cache documents changed by tick sweeps, by mode.",
            ["mode"],
            registry=registry,
        )
        self.last_sweep_completed = Gauge(
            p + "last_sweep_completed_timestamp_seconds",
            "Unix time at which the last sweep of each mode completed.",
            ["mode"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            p + "outbox_backlog_events",
            "Status-change events queued in MongoDB, not known published, past their relay.",
            registry=registry,
        )
        self.outbox_published = Counter(
            p + "outbox_published_total",
            "Status-change events published from the outbox (re-publications included).",
            registry=registry,
        )
        self.outbox_rejected = Counter(
            p + "outbox_rejected_total",
            "Status-change events Kafka refused for good (too large, not authorized), moved"
            " from the outbox to pass_status_outbox_rejected for an operator to replay.",
            registry=registry,
        )
        self.write_conflicts = Counter(
            p + "write_conflicts_total",
            "Conditional writes that found the document changed and were re-evaluated.",
            registry=registry,
        )
        self.mongodb_duration = Histogram(
            p + "mongodb_operation_duration_seconds",
            "MongoDB operation latency, by operation.",
            ["operation"],
            buckets=_OP_BUCKETS,
            registry=registry,
        )
        self.mongodb_commands = Counter(
            p + "mongodb_commands_total",
            "Commands sent to MongoDB (round trips), by command name, failed ones included.",
            ["command"],
            registry=registry,
        )
        self.mongodb_errors = Counter(
            p + "mongodb_errors_total",
            "MongoDB operations that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.kafka_duration = Histogram(
            p + "kafka_operation_duration_seconds",
            "Kafka operation latency, by operation (publish, commit, fetch; an idle fetch waits"
            " up to PASS_STATUS_FETCH_TIMEOUT_MS), failed attempts included: its count is the"
            " attempts pass_status_kafka_errors_total is a share of.",
            ["operation"],
            buckets=_OP_BUCKETS,
            registry=registry,
        )
        self.kafka_errors = Counter(
            p + "kafka_errors_total",
            "Kafka operations that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.retries = Counter(
            p + "retries_total",
            "Retries after transient faults, by operation.",
            ["operation"],
            registry=registry,
        )
        self.failures = Counter(
            p + "failures_total",
            "Failures met by the retrying parts, by operation, fault and the action taken"
            " (consumer.policy).",
            ["operation", "fault", "action"],
            registry=registry,
        )
        self.output_refused = Gauge(
            p + "output_refused",
            "1 while Kafka refuses an output topic for good (not authorized, missing, refusing"
            " the record) and consumption is paused for it; nothing is dead-lettered meanwhile.",
            ["topic"],
            registry=registry,
        )
        self.sweep_users_skipped = Counter(
            p + "sweep_users_skipped_total",
            "Users a sweep skipped (reported in its check log), by reason.",
            ["mode", "reason"],
            registry=registry,
        )
        self.ready = Gauge(
            p + "ready",
            "1 when ready: in the group, stores reachable, not backing off or stopping.",
            registry=registry,
        )
        self.check_logs_written = Counter(
            p + "check_logs_written_total",
            "Check-log documents written, by kind (interval, full).",
            ["kind"],
            registry=registry,
        )
        # Newest event time handled per (topic, partition), for consumer_lag_seconds.
        self.consumed_event_time: dict[tuple[str, int], float] = {}
        self.check_log_intervals_pending = Gauge(
            p + "check_log_intervals_pending",
            "Interval summaries closed and not yet written (the check-log write failing).",
            registry=registry,
        )
        self.check_log_intervals_dropped = Counter(
            p + "check_log_intervals_dropped_total",
            "Interval summaries never written, by reason: overflow (more than"
            " PASS_STATUS_CHECK_LOG_MAX_PENDING_INTERVALS waiting), shutdown (still waiting"
            " at stop).",
            ["reason"],
            registry=registry,
        )
        self._initialise_bounded_labels()

    def _initialise_bounded_labels(self) -> None:
        """Export zero-valued series for every known label value, so that ``rate()`` and
        ``increase()`` see the first event instead of a series appearing from nothing."""
        for mode in SWEEP_MODES:
            self.sweep_documents_read.labels(mode)
            self.sweep_documents_changed.labels(mode)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for kind in ("interval", "full", "due"):
            self.check_logs_written.labels(kind)
        for kind in REBALANCE_KINDS:
            self.rebalances.labels(kind)
        for operation in KAFKA_OPERATIONS:
            self.kafka_errors.labels(operation)
            self.kafka_duration.labels(operation)
        for reason in INTERVAL_DROP_REASONS:
            self.check_log_intervals_dropped.labels(reason)

    def record_consumed(self, topic: str, partition: int, timestamp_ms: int | None) -> None:
        """Note the event time of a handled record (the lag observer turns it into
        ``consumer_lag_seconds``); a record without a timestamp is not counted."""
        if timestamp_ms is None or timestamp_ms < 0:
            return
        key = (topic, partition)
        seconds = timestamp_ms / 1000
        if seconds > self.consumed_event_time.get(key, 0.0):
            self.consumed_event_time[key] = seconds


def _register_runtime_collectors(registry: CollectorRegistry) -> None:
    """Process (CPU, memory, file descriptors), GC and platform metrics on ``registry``.

    prometheus_client's default registry has them already; an injected one starts bare.
    """
    if registry is REGISTRY:
        return
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
