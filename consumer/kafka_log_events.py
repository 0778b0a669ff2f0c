"""aiokafka's free-text lines about a Kafka cluster doing its everyday work, told once.

A partition leader moving, a broker restarting or the group coordinator changing makes
aiokafka log several lines per partition and per retry, some at error level ("Unable connect
to node", "NotLeaderForPartitionError, retrying"), though the client recovers by itself. An
operator reading them at night sees failures. :class:`KafkaClientEvents` (a logging filter
on the handler, installed by :func:`consumer.logs.configure`) turns each known line into one
structured warning that says what happened and that it recovers by itself, and drops the
repeats of the same event for the same partition, broker or group for ``quiet_s`` seconds.
Unknown aiokafka lines pass unchanged.

The lines are recognised by aiokafka's message *templates* (fixed strings) and the error
*class* carried in their arguments, never by formatted text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RECOVERS = "the client refreshes its metadata and retries by itself; no action unless it lasts"

# Errors that mean "the partition's leader is elsewhere now" (a leader move).
LEADER_MOVED_ERRORS = frozenset(
    {
        "NotLeaderForPartitionError",
        "LeaderNotAvailableError",
        "NotLeaderOrFollowerError",
        "FencedLeaderEpochError",
        "UnknownLeaderEpochError",
    }
)
# Errors that mean "the in-sync replicas are fewer than min.insync.replicas".
NOT_ENOUGH_REPLICAS_ERRORS = frozenset(
    {"NotEnoughReplicasError", "NotEnoughReplicasAfterAppendError"}
)


@dataclass(frozen=True, slots=True)
class KafkaEvent:
    """What one aiokafka line means, as a structured event."""

    event: str
    key: tuple[Any, ...]  # repeats of the same key within the quiet period are dropped
    fields: dict[str, Any]


def _error_name(error: object) -> str:
    if isinstance(error, type):
        return error.__name__
    return type(error).__name__


def _partition(tp: object) -> dict[str, Any]:
    topic, partition = getattr(tp, "topic", None), getattr(tp, "partition", None)
    return {"topic": topic, "partition": partition} if topic is not None else {"where": str(tp)}


def _produce_retried(args: tuple[Any, ...]) -> KafkaEvent | None:
    tp, error = args
    name = _error_name(error)
    where = _partition(tp)
    if name in LEADER_MOVED_ERRORS:
        event = "kafka_partition_leader_moved"
    elif name in NOT_ENOUGH_REPLICAS_ERRORS:
        event = "kafka_not_enough_replicas"
    else:
        event = "kafka_write_retried"
    return KafkaEvent(event, (event, *where.values()), {**where, "error_type": name})


def _produce_failed(args: tuple[Any, ...]) -> KafkaEvent | None:
    (error,) = args  # the request failed as a whole: the broker is gone or slow
    name = _error_name(error)
    return KafkaEvent(
        "kafka_broker_unreachable",
        ("kafka_broker_unreachable", "producer", name),
        {"error_type": name},
    )


def _broker_unreachable(node_at: int) -> Callable[[tuple[Any, ...]], KafkaEvent | None]:
    def interpret(args: tuple[Any, ...]) -> KafkaEvent | None:
        node = args[node_at] if len(args) > node_at else None
        error = args[-1] if args else None
        return KafkaEvent(
            "kafka_broker_unreachable",
            ("kafka_broker_unreachable", str(node)),
            {"broker": str(node), "error_type": _error_name(error)},
        )

    return interpret


def _bootstrap_unreachable(args: tuple[Any, ...]) -> KafkaEvent | None:
    host, port, error = args
    broker = f"{host}:{port}"
    return KafkaEvent(
        "kafka_broker_unreachable",
        ("kafka_broker_unreachable", broker),
        {"broker": broker, "error_type": _error_name(error)},
    )


def _coordinator(group_at: int | None, node_at: int | None) -> Callable[..., KafkaEvent | None]:
    def interpret(args: tuple[Any, ...]) -> KafkaEvent | None:
        group = args[group_at] if group_at is not None and len(args) > group_at else None
        node = args[node_at] if node_at is not None and len(args) > node_at else None
        fields: dict[str, Any] = {"group": group} if group is not None else {}
        if node is not None:
            fields["previous_coordinator"] = str(node)
        return KafkaEvent(
            "kafka_group_coordinator_changed", ("kafka_group_coordinator_changed",), fields
        )

    return interpret


def _no_broker_answers(args: tuple[Any, ...]) -> KafkaEvent | None:
    (nodes,) = args  # every broker the client knows was tried
    return KafkaEvent(
        "kafka_broker_unreachable",
        ("kafka_broker_unreachable", "metadata"),
        {"broker": str(nodes), "error_type": "MetadataUpdateFailed"},
    )


def _fetch_failed(args: tuple[Any, ...]) -> KafkaEvent | None:
    node, error = args
    return KafkaEvent(
        "kafka_broker_unreachable",
        ("kafka_broker_unreachable", str(node)),
        {"broker": str(node), "error_type": _error_name(error)},
    )


def _leader_not_available(args: tuple[Any, ...]) -> KafkaEvent | None:
    (topic,) = args
    return KafkaEvent(
        "kafka_partition_leader_moved",
        ("kafka_partition_leader_moved", topic),
        {"topic": topic, "error_type": "LeaderNotAvailableError"},
    )


# aiokafka's templates (aiokafka 0.14: producer/sender.py, client.py, cluster.py,
# consumer/group_coordinator.py, consumer/fetcher.py) -> how to read their arguments.
TEMPLATES: dict[str, Callable[[tuple[Any, ...]], KafkaEvent | None]] = {
    "Got error produce response on topic-partition %s, retrying. Error: %s": _produce_retried,
    "Got error produce response: %s": _produce_failed,
    'Unable connect to "%s:%s": %s': _bootstrap_unreachable,
    "Unable connect to node with id %s: %s": _broker_unreachable(0),
    "Unable to request metadata from node with id %s: %r": _broker_unreachable(0),
    "Unable to update metadata from %s": _no_broker_answers,
    "Failed fetch messages from %s: %s": _fetch_failed,
    "Failed fetch offsets from %s: %s": _fetch_failed,
    "Topic %s is not available during auto-create initialization": _leader_not_available,
    "Marking the coordinator dead (node %s)for group %s.": _coordinator(1, 0),
    "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid": (
        _coordinator(0, 1)
    ),
    "Error sending %s to node %s [%s] -- marking coordinator dead": _coordinator(None, 1),
    "Group Coordinator Request failed: %s": _coordinator(None, None),
    "Heartbeat send request failed: %s. Will retry.": _coordinator(None, None),
    "Heartbeat session expired - marking coordinator dead": _coordinator(None, None),
    "OffsetCommit failed for group %s due to a coordinator error (%s), will find new "
    "coordinator and retry": _coordinator(0, None),
}

MESSAGES = {
    "kafka_partition_leader_moved": "a partition's leader moved to another broker",
    "kafka_not_enough_replicas": (
        "fewer in-sync replicas than min.insync.replicas: writes wait until brokers return"
    ),
    "kafka_write_retried": "a write to Kafka failed and is retried",
    "kafka_broker_unreachable": "a Kafka broker does not answer (restarting or down)",
    "kafka_group_coordinator_changed": "the consumer group's coordinator moved to another broker",
}


class KafkaClientEvents(logging.Filter):
    """Rewrites known aiokafka lines into one structured warning each; drops repeats."""

    def __init__(self, quiet_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._quiet_s = quiet_s
        self._clock = clock
        self._last: dict[tuple[Any, ...], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or getattr(record, "fields", None) is not None:
            return True
        interpret = TEMPLATES.get(str(record.msg))
        if interpret is None:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        try:
            meaning = interpret(args)
        except (TypeError, ValueError, IndexError):  # another aiokafka version's arguments
            return True
        if meaning is None:
            return True
        now = self._clock()
        last = self._last.get(meaning.key)
        if last is not None and now - last < self._quiet_s:
            return False
        self._last[meaning.key] = now
        record.msg, record.args = meaning.event, ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        record.fields = {
            **meaning.fields,
            "message": MESSAGES[meaning.event],
            "recovers": RECOVERS,
            "source": record.name,
        }
        return True
