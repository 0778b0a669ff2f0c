"""The topic spec applied to the local Kafka: by ``scripts/services up`` for the service's
topics, and by ``scripts/create_topics.py`` (create, repair a drifted config, ``--check``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from consumer.settings import Settings

from tests.conftest import REPO
from tests.unit.test_topic_spec import create_topics_module

SCRIPT = REPO / "scripts" / "create_topics.py"


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def topic_configs(admin: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """Every config of each topic, as the broker describes it."""
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    )
    return {
        name: {entry[0]: entry[1] for entry in entries}
        for response in responses
        for _error, _message, _type, name, entries in response.resources
    }


async def partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}


def expected(spec: list[Any]) -> dict[str, tuple[int, dict[str, str]]]:
    return {t.name: (t.partitions, t.configs) for t in spec}


async def found(admin: Any, spec: list[Any]) -> dict[str, tuple[int, dict[str, str]]]:
    names = [t.name for t in spec]
    configs, counts = await topic_configs(admin, names), await partition_counts(admin, names)
    return {t.name: (counts[t.name], {k: configs[t.name][k] for k in t.configs}) for t in spec}


async def test_services_up_creates_the_service_topics_to_the_local_spec(
    kafka_admin: Any,
) -> None:
    if os.environ.get("PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("an external Kafka: scripts/services does not manage its topics")
    spec = create_topics_module().load_spec(Settings(), "local")
    assert await found(kafka_admin, spec) == expected(spec)


async def test_create_topics_creates_repairs_and_checks(
    kafka_admin: Any, kafka_bootstrap: str, unique_name: str
) -> None:
    roles = ("ticket_used", "tick", "status_changed", "check_log", "dead_letter")
    env = {f"PASS_STATUS_TOPIC_{r.upper()}": f"{unique_name}.{r}" for r in roles}
    settings = Settings.from_env(env)
    spec = create_topics_module().load_spec(settings, "local")
    names = [t.name for t in spec]
    try:
        missing = run_script(env, "--bootstrap-server", kafka_bootstrap, "--check")
        assert missing.returncode == 1
        assert f"{names[0]}: missing" in missing.stderr

        created = run_script(env, "--bootstrap-server", kafka_bootstrap)
        assert created.returncode == 0, created.stderr
        assert await found(kafka_admin, spec) == expected(spec)

        # An operator's change by hand is reported by --check, then put back by a run.
        await kafka_admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    names[0],
                    configs={**spec[0].configs, "retention.ms": "60000"},
                )
            ]
        )
        drifted = run_script(env, "--bootstrap-server", kafka_bootstrap, "--check")
        assert drifted.returncode == 1
        wanted = spec[0].configs["retention.ms"]
        assert f"{names[0]}: retention.ms=60000, spec {wanted}" in drifted.stderr
        repaired = run_script(env, "--bootstrap-server", kafka_bootstrap)
        assert repaired.returncode == 0, repaired.stderr
        assert await found(kafka_admin, spec) == expected(spec)
        checked = run_script(env, "--bootstrap-server", kafka_bootstrap, "--check")
        assert checked.returncode == 0, checked.stderr
        assert "topics match the local spec" in checked.stdout
    finally:
        with contextlib.suppress(KafkaError):  # cleanup only: the test's result stands
            await kafka_admin.delete_topics(names)
