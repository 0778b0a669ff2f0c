"""docs/operations.md, "Reset or skip offsets": the marked commands, run verbatim against the
local Kafka through scripts/kafka-consumer-groups (Kafka's own ConsumerGroupCommand).

Each ``<!-- runbook-test: NAME -->`` block of the runbook is read from the document itself
and run by bash with ``kafka-consumer-groups.sh`` standing for the local tool, so an edit that
breaks a documented command breaks this test.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.conftest import REPO

pytestmark = pytest.mark.slow

RUNBOOK = REPO / "docs" / "operations.md"
TOOLS = REPO / "scripts"  # kafka-consumer-groups and kafka-console-consumer
BLOCK = re.compile(r"<!-- runbook-test: ([\w-]+) -->\n\s*```sh\n(.*?)\n\s*```", re.DOTALL)
PARTITIONS = 3
RECORDS = 10  # per partition: offsets 0-4 at T0, 5-9 an hour later
# Recent times: the local broker deletes records older than its 24 h retention.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
T0_MS = int(T0.timestamp() * 1000)
SINCE = (T0 + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # a rewind lands on 5
COMMITTED = {0: 3, 1: 7, 2: 9}


def runbook_blocks() -> dict[str, str]:
    blocks = dict(BLOCK.findall(RUNBOOK.read_text()))
    # The markdown indents blocks inside list items; bash wants them flush.
    return {name: re.sub(r"(?m)^   ", "", body) for name, body in blocks.items()}


def run_block(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = (
        f'kafka-consumer-groups.sh() {{ "{TOOLS}/kafka-consumer-groups" "$@"; }}\n'
        f'kafka-console-consumer.sh() {{ "{TOOLS}/kafka-console-consumer" "$@"; }}\n'
        f"{runbook_blocks()[name]}\n"
    )
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


@pytest.fixture
async def stopped_group(
    kafka_bootstrap: str, make_topics: Any, unique_name: str
) -> tuple[str, str]:
    """A topic with timestamped records and a group with committed offsets and no member."""
    (topic,) = await make_topics([unique_name], partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for offset in range(RECORDS):
            stamp = T0_MS + (0 if offset < 5 else 3_600_000)
            for partition in range(PARTITIONS):
                value = f'{{"offset": {offset}, "partition": {partition}}}'.encode()
                await producer.send_and_wait(
                    topic, value, key=b"42", partition=partition, timestamp_ms=stamp
                )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=unique_name, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.commit({TopicPartition(topic, p): o for p, o in COMMITTED.items()})
    finally:
        await consumer.stop()
    return topic, unique_name


def runbook_env(bootstrap: str, topic: str, group: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "admin.properties").write_text("")  # no security on the local Kafka
    return {
        "BOOTSTRAP": bootstrap,
        "GROUP": group,
        "TOPIC": topic,
        "PARTITION": "1",
        "OFFSET": "7",
        "SINCE": SINCE,
    }


def test_runbook_marks_every_offset_step() -> None:
    assert set(runbook_blocks()) >= {
        "offsets-state",
        "offsets-describe",
        "offsets-save",
        "offsets-skip-dry-run",
        "offsets-skip",
        "offsets-rewind-dry-run",
        "offsets-rewind",
    }


async def test_documented_skip_and_rewind_move_exactly_the_offsets_they_say(
    kafka_bootstrap: str, stopped_group: tuple[str, str], tmp_path: Path
) -> None:
    topic, group = stopped_group
    env = runbook_env(kafka_bootstrap, topic, group, tmp_path)

    state = run_block("offsets-state", env, tmp_path)
    assert state.returncode == 0, state.stderr
    assert "has no active members" in state.stdout + state.stderr or "Empty" in state.stdout

    described = run_block("offsets-describe", env, tmp_path)
    assert described.returncode == 0, described.stderr
    assert re.search(rf"{re.escape(topic)}\s+1\s+7\s+10\s+3", described.stdout), described.stdout

    saved = run_block("offsets-save", env, tmp_path)
    assert saved.returncode == 0, saved.stderr
    record = (tmp_path / "skipped-1-7.txt").read_text()
    assert '{"offset": 7, "partition": 1}' in record
    assert "42" in record  # the key, to produce it again later
    assert await committed(kafka_bootstrap, group, topic) == COMMITTED  # reading moves nothing

    preview = run_block("offsets-skip-dry-run", env, tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert re.search(rf"{re.escape(topic)}\s+1\s+8\b", preview.stdout), preview.stdout
    assert await committed(kafka_bootstrap, group, topic) == COMMITTED  # a preview only

    skipped = run_block("offsets-skip", env, tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "Error" not in skipped.stdout + skipped.stderr
    assert await committed(kafka_bootstrap, group, topic) == {**COMMITTED, 1: 8}

    rewind_preview = run_block("offsets-rewind-dry-run", env, tmp_path)
    assert rewind_preview.returncode == 0, rewind_preview.stderr
    assert await committed(kafka_bootstrap, group, topic) == {**COMMITTED, 1: 8}

    rewound = run_block("offsets-rewind", env, tmp_path)
    assert rewound.returncode == 0, rewound.stderr
    # The first record at or after SINCE is offset 5 on every partition.
    assert await committed(kafka_bootstrap, group, topic) == dict.fromkeys(COMMITTED, 5)


async def test_documented_reset_of_a_group_with_a_member_is_refused_and_changes_nothing(
    kafka_bootstrap: str, stopped_group: tuple[str, str], tmp_path: Path
) -> None:
    """The runbook warns that Kafka refuses (with exit status 0): checked, so the warning
    stays true for the Kafka version the project uses."""
    topic, group = stopped_group
    env = runbook_env(kafka_bootstrap, topic, group, tmp_path)
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await member.start()
    try:
        await member.getmany(timeout_ms=5000)  # joined: the group is Stable
        refused = await asyncio.to_thread(run_block, "offsets-skip", env, tmp_path)
    finally:
        await member.stop()
    assert refused.returncode == 0, refused.stderr  # as the runbook says: read the output
    assert "can only be reset if the group" in refused.stdout + refused.stderr
    assert await committed(kafka_bootstrap, group, topic) == COMMITTED
