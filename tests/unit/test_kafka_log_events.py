"""A leader move or a coordinator change is logged once, as a structured warning that says it
recovers by itself, not as aiokafka's free text (some of it at error level)."""

from __future__ import annotations

import ast
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka
import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from aiokafka.structs import TopicPartition
from consumer import logs
from consumer.kafka_log_events import TEMPLATES


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


SENDER = logging.getLogger("aiokafka.producer.sender")
CLIENT = logging.getLogger("aiokafka.client")
COORDINATOR = logging.getLogger("aiokafka.consumer.group_coordinator")
FETCHER = logging.getLogger("aiokafka.consumer.fetcher")
PRODUCE_RETRY = "Got error produce response on topic-partition %s, retrying. Error: %s"


def test_every_template_is_one_aiokafka_logs() -> None:
    """Guards an aiokafka upgrade: a template that changed would silently stop matching."""
    root = Path(aiokafka.__file__).parent
    constants = {
        node.value
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(TEMPLATES) - constants == set()


def test_a_leader_move_is_one_structured_warning_per_partition(lines: io.StringIO) -> None:
    for _ in range(5):  # a retry loop: the same line again and again
        SENDER.warning(PRODUCE_RETRY, TopicPartition("status", 1), NotLeaderForPartitionError)
    SENDER.warning(PRODUCE_RETRY, TopicPartition("status", 2), NotLeaderForPartitionError())

    logged = _parsed(lines)
    assert [(x["event"], x["topic"], x["partition"]) for x in logged] == [
        ("kafka_partition_leader_moved", "status", 1),
        ("kafka_partition_leader_moved", "status", 2),
    ]
    assert {x["level"] for x in logged} == {"warning"}
    assert {x["error_type"] for x in logged} == {"NotLeaderForPartitionError"}
    assert all("by itself" in x["recovers"] for x in logged)


def test_not_enough_replicas_is_named(lines: io.StringIO) -> None:
    SENDER.warning(PRODUCE_RETRY, TopicPartition("status", 0), NotEnoughReplicasError)
    [line] = _parsed(lines)
    assert line["event"] == "kafka_not_enough_replicas"
    assert "min.insync.replicas" in line["message"]


def test_a_coordinator_change_is_one_warning_not_errors(lines: io.StringIO) -> None:
    COORDINATOR.warning("Marking the coordinator dead (node %s)for group %s.", 2, "pass-status")
    COORDINATOR.error("Heartbeat send request failed: %s. Will retry.", RequestTimedOutError())
    COORDINATOR.error("Group Coordinator Request failed: %s", NodeNotReadyError("x"))
    COORDINATOR.error(
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "HeartbeatRequest",
        2,
        NodeNotReadyError("2"),
    )
    [line] = _parsed(lines)
    assert line["event"] == "kafka_group_coordinator_changed"
    assert line["level"] == "warning"
    assert line["group"] == "pass-status"
    assert line["previous_coordinator"] == "2"


def test_an_unreachable_broker_is_a_warning_once_per_broker(lines: io.StringIO) -> None:
    CLIENT.error("Unable connect to node with id %s: %s", 3, KafkaConnectionError("refused"))
    CLIENT.error("Unable connect to node with id %s: %s", 3, KafkaConnectionError("refused"))
    FETCHER.error("Failed fetch messages from %s: %s", 3, NodeNotReadyError("3"))
    CLIENT.error('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, OSError("refused"))
    SENDER.warning("Got error produce response: %s", NodeNotReadyError("node 3"))
    CLIENT.error("Unable to update metadata from %s", [1, 2, 3])
    logged = _parsed(lines)
    assert [(x["event"], x.get("broker"), x["level"]) for x in logged] == [
        ("kafka_broker_unreachable", "3", "warning"),
        ("kafka_broker_unreachable", "127.0.0.1:9092", "warning"),
        ("kafka_broker_unreachable", None, "warning"),
        ("kafka_broker_unreachable", "[1, 2, 3]", "warning"),
    ]


def test_other_aiokafka_lines_pass_unchanged(lines: io.StringIO) -> None:
    COORDINATOR.error("Attempt to join group failed due to fatal error: %s", "boom")
    [line] = _parsed(lines)
    assert line["level"] == "error"
    assert line["message"] == "Attempt to join group failed due to fatal error: boom"
