"""/metrics, /healthz and /readyz of a running consumer after real traffic."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, tick, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    produce,
    produce_json,
    read_topic,
)

Collection = AsyncCollection[dict[str, Any]]


def promtool() -> str:
    cache = Path(os.environ.get("PASS_STATUS_CACHE", Path.home() / ".cache" / "pass-status"))
    found = shutil.which("promtool") or str(cache / "bin" / "promtool")
    assert Path(found).exists(), "promtool missing: run scripts/services tools"
    return found


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_move_with_traffic_and_pass_promtool(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    bootstrap = settings.kafka_bootstrap_servers
    passes = {uid: a_pass("USABLE", timedelta(hours=1)) for uid in range(1, 6)}
    await cache.insert_many([a_user(uid, [p]) for uid, p in passes.items()])
    process = ConsumerProcess(service_env).start()
    consumers.append(process)

    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, p["pass_uuid"]) for u, p in passes.items()],
    )
    await produce(
        bootstrap,
        settings.topic_ticket_used,
        [(b"1", b"nope"), (b"2", orjson.dumps(ticket_used(424242, "x")))],
    )
    await produce_json(bootstrap, settings.topic_tick, [tick("due")], key_field="shard")
    await read_topic(bootstrap, settings.topic_status_changed, expect=5, settle=0)
    await read_topic(bootstrap, settings.topic_dead_letter, expect=2, settle=0)
    process.wait_for("sweep_completed", timeout=30)

    # Gauges refresh every 5 s; wait for ready and for the last batch to be counted.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        status, body = process.http_get("/metrics")
        got = samples(body.decode())
        if (
            got.get(("pass_status_ready", ()), 0) == 1
            or asyncio.get_running_loop().time() > deadline
        ):
            break
        await asyncio.sleep(0.5)

    topic = settings.topic_ticket_used
    assert status == 200
    assert (
        got[("pass_status_events_consumed_total", (("outcome", "applied"), ("topic", topic)))] == 5
    )
    assert (
        got[("pass_status_events_consumed_total", (("outcome", "dead_lettered"), ("topic", topic)))]
        == 2
    )
    assert (
        got[
            (
                "pass_status_transitions_total",
                (("cause", "ticket_used"), ("from_status", "USABLE"), ("to_status", "USING")),
            )
        ]
        == 5
    )
    assert got[("pass_status_dead_letters_total", (("reason", "not_json"),))] == 1
    assert got[("pass_status_dead_letters_total", (("reason", "unknown_user"),))] == 1
    assert got[("pass_status_outbox_published_total", ())] == 5
    assert (
        got[("pass_status_sweep_documents_read_total", (("mode", "due"),))] == 0
    )  # all evaluated already
    assert got[("pass_status_last_sweep_completed_timestamp_seconds", (("mode", "due"),))] > 0
    assert got[("pass_status_batch_size_events_count", ())] >= 1
    assert got[("pass_status_end_to_end_latency_seconds_count", (("cause", "ticket_used"),))] == 5
    assert (
        got[
            ("pass_status_mongodb_operation_duration_seconds_count", (("operation", "write_user"),))
        ]
        == 5
    )
    # Every write is at least one update command (two round trips on FerretDB, whose
    # conditions are checked by a find first); each batch began with a find.
    assert got[("pass_status_mongodb_commands_total", (("command", "update"),))] >= 5
    assert got[("pass_status_mongodb_commands_total", (("command", "find"),))] >= 1
    assert got[("pass_status_ready", ())] == 1
    assert got[("pass_status_outbox_backlog_events", ())] == 0
    assert got[("pass_status_assigned_partitions", ())] == 6
    assert any(name == "pass_status_build_info" for name, _ in got)
    lag = {
        labels: v
        for (name, labels), v in got.items()
        if name == "pass_status_consumer_lag_messages"
    }
    assert lag
    assert all(v == 0 for v in lag.values())
    # No user id ever becomes a label.
    assert not any("user" in key for _, labels in got for key, _ in labels)

    check = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    assert process.http_get("/healthz")[0] == 200
    ready_status, ready_body = process.http_get("/readyz")
    assert ready_status == 200
    assert orjson.loads(ready_body)["mongodb_ok"] is True
    assert process.http_get("/nope")[0] == 404
    assert process.stop() == 0
