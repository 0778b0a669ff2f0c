"""Create the five topics of the service to the topic spec (scripts/topics.toml), or check them.

    uv run python scripts/create_topics.py                        # local profile (scripts/services)
    uv run python scripts/create_topics.py --profile production   # a real cluster
    uv run python scripts/create_topics.py --profile production --check   # verify only
    uv run python scripts/create_topics.py --profile production --doc     # docs/operations.md block

Topic names and the connection come from the PASS_STATUS_* settings (``--bootstrap-server``
overrides the address). A missing topic is created with the spec's partitions, replication
factor and configs; an existing one gets the spec's configs (``min.insync.replicas``,
``retention.ms``, ``max.message.bytes``, ``cleanup.policy``). Partitions are never added: that
would move keys between partitions and break per-user order; a different count is reported.
Exit 0 when every topic matches the spec, 1 when one does not (or Kafka is unreachable),
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from consumer.adapters.kafka import connection_options
from consumer.commands import load_settings
from consumer.settings import Settings

SPEC_PATH = Path(__file__).with_name("topics.toml")
PROFILES = ("local", "production")
# The spec's keys and the Kafka topic configs they set, in the order shown.
TOPICS_TOOL = 'kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --command-config admin.properties'
Found = dict[str, tuple[int, dict[str, str]]]  # topic -> (partitions, the spec's configs)
CONFIG_KEYS = {
    "min_insync_replicas": "min.insync.replicas",
    "retention_ms": "retention.ms",
    "max_message_bytes": "max.message.bytes",
    "cleanup_policy": "cleanup.policy",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the spec wants it."""

    role: str  # the setting naming it: ``ticket_used`` is PASS_STATUS_TOPIC_TICKET_USED
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def load_spec(settings: Settings, profile: str, path: Path = SPEC_PATH) -> list[TopicSpec]:
    """The topics of ``profile``, named by ``settings``."""
    spec = tomllib.loads(path.read_text())
    overrides = spec["profiles"][profile]
    topics = []
    for role, wanted in spec["topics"].items():
        merged = {**wanted, **overrides}
        topics.append(
            TopicSpec(
                role=role,
                name=getattr(settings, f"topic_{role}"),
                partitions=int(merged["partitions"]),
                replication_factor=int(merged["replication_factor"]),
                configs={kafka: str(merged[key]) for key, kafka in CONFIG_KEYS.items()},
            )
        )
    return topics


def _topic_resource(name: str, configs: dict[str, str] | None = None) -> Any:
    return ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)


async def describe_topics(admin: Any, names: Sequence[str]) -> Found:
    """Partition count and the spec's configs of each existing topic among ``names``."""
    described = {t["topic"]: t for t in await admin.describe_topics(list(names))}
    existing = [n for n in names if n in described and described[n].get("error_code") == 0]
    if not existing:
        return {}
    responses = await admin.describe_configs([_topic_resource(n) for n in existing])
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for _error, _message, _type, name, entries in response.resources:
            configs[name] = {
                entry[0]: entry[1] for entry in entries if entry[0] in CONFIG_KEYS.values()
            }
    return {n: (len(described[n]["partitions"]), configs.get(n, {})) for n in existing}


def differences(spec: Sequence[TopicSpec], found: Found) -> list[str]:
    """One line per way the topics found differ from the spec (missing, partitions, configs)."""
    lines = []
    for topic in spec:
        if topic.name not in found:
            lines.append(f"{topic.name}: missing")
            continue
        partitions, configs = found[topic.name]
        if partitions != topic.partitions:
            lines.append(f"{topic.name}: {partitions} partitions, spec {topic.partitions}")
        lines.extend(
            f"{topic.name}: {key}={configs.get(key)}, spec {value}"
            for key, value in topic.configs.items()
            if configs.get(key) != value
        )
    return lines


async def apply_spec(
    settings: Settings, spec: Sequence[TopicSpec], *, check_only: bool = False
) -> list[str]:
    """Create the missing topics and set the spec's configs (unless ``check_only``); returns
    the differences left (empty: every topic matches)."""
    admin = AIOKafkaAdminClient(client_id="pass-status-setup", **connection_options(settings))
    await admin.start()
    try:
        found = await describe_topics(admin, [t.name for t in spec])
        if not check_only:
            missing = [t for t in spec if t.name not in found]
            if missing:
                # A concurrent creator may win the race; the configs are set below either way.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                t.name, t.partitions, t.replication_factor, topic_configs=t.configs
                            )
                            for t in missing
                        ]
                    )
            drifted = [t for t in spec if t.name in found and found[t.name][1] != t.configs]
            if drifted:
                await admin.alter_configs([_topic_resource(t.name, t.configs) for t in drifted])
            found = await _settled(admin, spec)
        return differences(spec, found)
    finally:
        await admin.close()


async def _settled(admin: Any, spec: Sequence[TopicSpec]) -> Found:
    """The topics once created and configured: metadata reaches every broker shortly after."""
    for _ in range(50):
        found = await describe_topics(admin, [t.name for t in spec])
        if not differences(spec, found):
            return found
        await asyncio.sleep(0.1)
    return found


def doc_block(spec: Sequence[TopicSpec]) -> str:
    """The topic table and commands docs/operations.md shows (checked by a test)."""
    rows = [
        (
            "| topic (setting) | partitions | replication | min.insync.replicas | retention.ms | "
            "max.message.bytes | cleanup.policy |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for t in spec:
        c = t.configs
        rows.append(
            f"| `{t.name}` (`PASS_STATUS_TOPIC_{t.role.upper()}`) | {t.partitions} | "
            f"{t.replication_factor} | {c['min.insync.replicas']} | {c['retention.ms']} | "
            f"{c['max.message.bytes']} | {c['cleanup.policy']} |"
        )
    commands = ["```sh"]
    for t in spec:
        configs = " ".join(f"--config {k}={v}" for k, v in t.configs.items())
        commands.append(
            f"{TOPICS_TOOL} --create --if-not-exists --topic {t.name} \\\n"
            f"    --partitions {t.partitions} --replication-factor {t.replication_factor} \\\n"
            f"    {configs}"
        )
    commands.append("```")
    return "\n".join([*rows, "", *commands])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--profile", choices=PROFILES, default="local")
    parser.add_argument("--bootstrap-server", metavar="HOST:PORT", help="instead of the setting")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="change nothing; report differences")
    what.add_argument("--doc", action="store_true", help="print the docs/operations.md block")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.bootstrap_server:
        settings = dataclasses.replace(settings, kafka_bootstrap_servers=args.bootstrap_server)
    spec = load_spec(settings, args.profile)
    if args.doc:
        print(doc_block(spec))
        return 0
    try:
        left = asyncio.run(apply_spec(settings, spec, check_only=args.check))
    except KafkaError as exc:
        print(f"create_topics: error: Kafka: {exc!r}", file=sys.stderr)
        return 1
    for line in left:
        print(f"create_topics: {line}", file=sys.stderr)
    if not left:
        names = ", ".join(t.name for t in spec)
        print(f"topics match the {args.profile} spec: {names}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
