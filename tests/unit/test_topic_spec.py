"""The topic spec (scripts/topics.toml): what docs/operations.md shows and what it promises.

The doc's table and commands are generated from the spec (``scripts/create_topics.py
--profile production --doc``); a spec changed without the doc, or the reverse, fails here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from aiokafka.partitioner import murmur2
from consumer.app import tick_events
from consumer.settings import (
    CHECK_LOG_MAX_BYTES_LIMIT,
    PRODUCER_MAX_REQUEST_BYTES,
    Settings,
)

from tests.conftest import REPO

RUNBOOK = REPO / "docs" / "operations.md"
BLOCK = re.compile(r"<!-- topics:begin -->\n(.*?)\n<!-- topics:end -->", re.DOTALL)
RECORD_OVERHEAD_BYTES = 16_384  # key, headers, record and batch framing (a generous bound)


def create_topics_module() -> ModuleType:
    """scripts/create_topics.py, imported as a module (scripts/ is not a package)."""
    name = "create_topics"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "create_topics.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def production() -> list[Any]:
    """The production profile's topics (``TopicSpec`` of scripts/create_topics.py)."""
    spec: list[Any] = create_topics_module().load_spec(Settings(), "production")
    return spec


def test_runbook_topic_table_is_the_spec() -> None:
    """docs/operations.md shows exactly what scripts/topics.toml holds (regenerate the block
    with ``uv run python scripts/create_topics.py --profile production --doc``)."""
    found = BLOCK.search(RUNBOOK.read_text())
    assert found, "docs/operations.md has no <!-- topics:begin --> ... <!-- topics:end --> block"
    wanted = create_topics_module().doc_block(production())
    assert found[1] == wanted


def test_spec_names_every_topic_setting_once() -> None:
    settings = {f.name for f in dataclasses.fields(Settings) if f.name.startswith("topic_")}
    roles = [f"topic_{t.role}" for t in production()]
    assert sorted(roles) == sorted(settings)


def test_production_survives_one_broker_down_without_losing_acknowledged_writes() -> None:
    for topic in production():
        configs = topic.configs
        assert topic.replication_factor == 3, topic
        assert int(configs["min.insync.replicas"]) == 2, topic
        assert configs["cleanup.policy"] == "delete", topic  # events, not a keyed state


def test_input_partitions_follow_the_scaling_rule() -> None:
    """docs/scaling.md: input partitions at least 12, a multiple of 6."""
    inputs = {t.role: t for t in production()}
    for role in ("ticket_used", "tick"):
        assert inputs[role].partitions >= 12
        assert inputs[role].partitions % 6 == 0


def test_every_record_the_service_writes_fits_its_topic() -> None:
    """The largest input's dead letter (value and headers in base64, 4/3) fits the 1 MiB
    producer request and the dead-letter topic; a check-log part fits its topic; the outputs
    take any record the producer can send."""
    topics = {t.role: t for t in production()}

    def limit(role: str) -> int:
        return int(topics[role].configs["max.message.bytes"])

    largest_input = max(limit("ticket_used"), limit("tick"))
    dead_letter = largest_input * 4 // 3 + RECORD_OVERHEAD_BYTES
    assert dead_letter <= PRODUCER_MAX_REQUEST_BYTES
    assert dead_letter <= limit("dead_letter")
    assert limit("check_log") >= CHECK_LOG_MAX_BYTES_LIMIT + RECORD_OVERHEAD_BYTES
    assert limit("status_changed") >= PRODUCER_MAX_REQUEST_BYTES
    assert largest_input >= Settings().max_message_bytes  # larger inputs reach the consumer


def test_local_profile_is_one_broker() -> None:
    local = create_topics_module().load_spec(Settings(), "local")
    for topic in local:
        assert topic.replication_factor == 1
        assert topic.configs["min.insync.replicas"] == "1"


def test_repository_paths_named_by_the_service_exist() -> None:
    """Defect: the missing-topics error told operators to run ``scripts/topics``, which never
    existed. Every ``scripts/...`` or ``docs/...`` path the package names must exist."""
    named = {
        match
        for source in (REPO / "consumer").rglob("*.py")
        for match in re.findall(r"\b((?:scripts|docs)/[\w./-]*\w)", source.read_text())
    }
    assert named, "the pattern found nothing: the test would pass vacuously"
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert missing == []


def test_runbook_states_how_tick_shards_spread_over_tick_partitions() -> None:
    """The runbook's figure is what Kafka's default partitioner does with the shard keys
    (``consumer.app.tick_events`` keys shard n as ``str(n)``; the chart runs 12 shards)."""
    tick = next(t for t in production() if t.role == "tick")
    events = tick_events("due", None, True, 12, datetime.now(UTC))
    used = {(murmur2(key) & 0x7FFFFFFF) % tick.partitions for key, _ in events}
    wanted = f"land on {len(used)} of the {tick.partitions}\n  tick partitions"
    assert wanted in RUNBOOK.read_text()
