"""/metrics, /healthz and /readyz of a running consumer after real traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import socketserver
import subprocess
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.uri_parser import parse_uri

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
    # The 5 users' writes go in one bulk per round (issue 20): timed as write_users, each
    # bulk at least one update command; each batch began with a find.
    bulks = got[
        ("pass_status_mongodb_operation_duration_seconds_count", (("operation", "write_users"),))
    ]
    assert 1 <= bulks <= 5
    assert got[("pass_status_mongodb_commands_total", (("command", "update"),))] >= bulks
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
    # Per-partition alert inputs (issue 21): caught up, so 0 seconds behind; each assigned
    # partition has a last-commit time; fetches are counted as Kafka attempts.
    lag_seconds = {
        labels: v for (name, labels), v in got.items() if name == "pass_status_consumer_lag_seconds"
    }
    assert lag_seconds.keys() == lag.keys()
    assert all(v == 0 for v in lag_seconds.values())
    commits = {
        labels: v
        for (name, labels), v in got.items()
        if name == "pass_status_last_commit_timestamp_seconds"
    }
    assert commits.keys() == lag.keys()
    assert all(v > 0 for v in commits.values())
    fetches = ("pass_status_kafka_operation_duration_seconds_count", (("operation", "fetch"),))
    assert got[fetches] >= 1
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _StoreProxy:
    """The store "returning": a TCP proxy that starts listening on ``port`` and forwards every
    connection to the real MongoDB-compatible server. Before :meth:`start` nothing listens
    there, exactly as with a server that is down (connections refused); the shared server
    itself is never stopped."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self._port = port
        self._upstream = upstream
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        upstream = self._upstream

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(upstream, timeout=10) as remote:
                    remote.settimeout(None)
                    back = threading.Thread(target=_copy, args=(remote, self.request), daemon=True)
                    back.start()
                    _copy(self.request, remote)
                    back.join(timeout=5)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self._port), Pipe)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _host_port(mongodb_uri: str) -> tuple[str, int]:
    host, port = parse_uri(mongodb_uri)["nodelist"][0]
    return str(host), int(port)


STORE_DOWN_SECONDS = 90.0


async def test_store_down_at_start_stays_live_and_becomes_ready_by_itself(
    service_env: ServiceEnv, consumers: list[ConsumerProcess], mongodb_uri: str
) -> None:
    """MongoDB is down for 90 s at start: /healthz stays 200 throughout (no restart loop),
    /readyz stays 503, and the consumer becomes ready on its own once the store answers."""
    port = _free_port()
    service = service_env.with_overrides(mongodb_uri=f"mongodb://127.0.0.1:{port}")
    process = ConsumerProcess(service)
    consumers.append(process)
    with contextlib.suppress(AssertionError):  # no consumer_started while the store is down
        process.start(wait_assigned=False, timeout=1)
    process.wait_for("http_server_started", timeout=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    checks = 0
    while loop.time() - started < STORE_DOWN_SECONDS:
        if process.port is not None:
            health_status, health_body = process.http_get("/healthz")
            assert health_status == 200, (round(loop.time() - started), health_body)
            ready_status, ready_body = process.http_get("/readyz")
            assert ready_status == 503, ready_body
            assert orjson.loads(ready_body)["mongodb_ok"] is False
            checks += 1
        await asyncio.sleep(2)
    assert checks >= 40, f"only {checks} probes answered in {STORE_DOWN_SECONDS} s"
    assert process.events("startup_waiting"), "the store was never waited for"

    store = _StoreProxy(port, _host_port(mongodb_uri))
    store.start()
    try:
        deadline = loop.time() + 90
        while True:
            ready_status, ready_body = process.http_get("/readyz")
            if ready_status == 200 or loop.time() > deadline:
                break
            assert process.http_get("/healthz")[0] == 200
            await asyncio.sleep(1)
        assert ready_status == 200, ready_body
        assert process.events("partitions_assigned")
        metrics = samples(process.http_get("/metrics")[1].decode())
        assert metrics[("pass_status_event_loop_lag_seconds_count", ())] >= STORE_DOWN_SECONDS / 2
        # SIGTERM about a second after this late join: a clean exit within the grace (it
        # used to take the whole grace and exit 1 when a periodic job lost its cancel).
        code = process.stop()
        assert code == 0, "\n".join(process.raw[-30:])
    finally:
        store.stop()
