"""Create the five topics of the service (idempotent), from the PASS_STATUS_* settings.

uv run python scripts/create_topics.py [--partitions 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from consumer.adapters.kafka import connection_options
from consumer.commands import load_settings
from consumer.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_ticket_used,
        settings.topic_tick,
        settings.topic_status_changed,
        settings.topic_check_log,
        settings.topic_dead_letter,
    ]


async def create_topics(settings: Settings, partitions: int) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(client_id="pass-status-setup", **connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_names(settings) if t not in existing]
        if missing:
            # A concurrent creator may win the race; the topic exists either way.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
        return missing
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    created = asyncio.run(create_topics(load_settings(), args.partitions))
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
