"""Credentials never show: not in logs, not in /metrics or the health endpoints, not in
error messages of the consumer or of the one-shot commands.

The consumer runs with a MongoDB URI holding a user and password (FerretDB does not
enforce authentication here, or refuses it: either way the output is scanned) and with
Kafka SASL settings: against the PLAINTEXT broker (every Kafka connection fails, the error
paths print what they print), and against a real SASL_PLAINTEXT listener (PLAIN and
SCRAM-SHA-512), both with the right password (the consumer works) and a wrong one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from tests.integration import own_kafka
from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import (
    REPO,
    ConsumerProcess,
    ServiceEnv,
    all_topics,
    produce_json,
    read_topic,
    service_environment,
)

pytestmark = pytest.mark.integration

MONGO_PASSWORD = "Mongo-Pw!s3cr3t#42"
SASL_PASSWORD = "Sasl-Pw-k4fk4-s3cr3t"


def _forms(secret: str) -> set[str]:
    """The secret as written, URL-encoded, and in the pieces a careless redactor might
    leave (anything of 8+ characters from the middle)."""
    return {secret, urllib.parse.quote(secret, safe=""), secret[2:-2]}


# FerretDB refuses SCRAM (the default mechanism): the MongoDB error path. It accepts PLAIN
# without checking: startup goes on to Kafka, which fails on SASL: the Kafka error path.
MECHANISMS = {"scram": "", "plain": "/?authMechanism=PLAIN&authSource=%24external"}


def _secret_env(service: ServiceEnv, mongodb_uri: str, mechanism: str = "plain") -> dict[str, str]:
    host = mongodb_uri.split("://", 1)[1].split("/", 1)[0]
    password = urllib.parse.quote(MONGO_PASSWORD, safe="")
    return {
        **os.environ,
        **service.env,
        "PASS_STATUS_MONGODB_URI": f"mongodb://svc-user:{password}@{host}{MECHANISMS[mechanism]}",
        "PASS_STATUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PASS_STATUS_KAFKA_SASL_MECHANISM": "PLAIN",
        "PASS_STATUS_KAFKA_SASL_USERNAME": "svc-user",
        "PASS_STATUS_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "PASS_STATUS_LOG_LEVEL": "DEBUG",
        "PASS_STATUS_MONGODB_TIMEOUT_MS": "1500",
        "PYTHONUNBUFFERED": "1",
    }


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def _leaks(text: str) -> list[str]:
    return sorted(
        form
        for secret in (MONGO_PASSWORD, SASL_PASSWORD)
        for form in _forms(secret)
        if form in text
    )


@pytest.mark.parametrize(
    ("mechanism", "failing"),
    [("scram", "MongoDB ping failed"), ("plain", "cannot list Kafka topics")],
)
def test_the_consumer_prints_no_credentials(
    service_env: ServiceEnv, mongodb_uri: str, mechanism: str, failing: str
) -> None:
    env = _secret_env(service_env, mongodb_uri, mechanism)
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    port: int | None = None
    bodies: list[str] = []
    try:
        assert proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        collected = b""
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            chunk = proc.stderr.read() or b""
            collected += chunk
            for line in collected.splitlines():
                try:
                    entry: Any = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and entry.get("event") == "http_server_started":
                    port = int(entry["port"])
            if port is not None and collected.count(b"startup_waiting") >= 2:
                break
            time.sleep(0.2)
        assert port is not None, collected.decode(errors="replace")[-3000:]
        for path in ("/metrics", "/readyz", "/healthz"):
            status, body = _http(port, path)
            bodies.append(f"{path} {status}\n{body}")
        assert _http(port, "/readyz")[0] == 503
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=40)
    printed = out.decode(errors="replace") + collected.decode(errors="replace")
    printed += err.decode(errors="replace")
    assert failing in printed, printed[-3000:]  # the error path under test did run
    assert "svc-user:***@" in printed  # the URI is shown, redacted
    assert _leaks(printed) == [], printed[-3000:]
    assert _leaks("\n".join(bodies)) == []


@pytest.mark.parametrize(
    "args",
    [["check", "--all"], ["check", "--user", "5", "--apply"], ["tick", "--mode", "due"]],
    ids=["check-all", "check-user-apply", "tick"],
)
def test_one_shot_commands_print_no_credentials(
    service_env: ServiceEnv, mongodb_uri: str, args: list[str]
) -> None:
    env = _secret_env(service_env, mongodb_uri)
    done = subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    printed = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode != 0, "Kafka must refuse the SASL settings of this test"
    assert printed.strip(), "an error must be reported"
    assert _leaks(printed) == [], printed[-3000:]


# --- a real SASL_PLAINTEXT listener ---------------------------------------------------------
# A Kafka of this test module only, started by `scripts/services up --sasl` in a temporary
# state directory on free ports, and stopped afterwards (the shared Kafka is never touched,
# and concurrent test runs each get their own). Its one user accepts SASL_PASSWORD with PLAIN
# and SCRAM-SHA-512.

SASL_USER = "pass-status"
WRONG_PASSWORD = "Wr0ng-Pw-n0t-th3-0ne"


@pytest.fixture(scope="module")
def sasl_kafka(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """``plaintext`` (admin, test producers) and ``sasl`` bootstrap addresses of one broker."""
    state = tmp_path_factory.mktemp("sasl-services")
    with own_kafka.sasl_kafka(state, mongodb_uri, SASL_USER, SASL_PASSWORD) as addresses:
        yield addresses


@pytest.fixture
async def sasl_service(
    sasl_kafka: dict[str, str], mongodb_uri: str, unique_name: str
) -> AsyncIterator[ServiceEnv]:
    """A deployment on the SASL listener: its topics, its database, MongoDB credentials in
    the URI (PLAIN: FerretDB does not check them), Kafka credentials of the SASL user."""
    host = mongodb_uri.split("://", 1)[1].split("/", 1)[0]
    password = urllib.parse.quote(MONGO_PASSWORD, safe="")
    service = service_environment(
        unique_name,
        sasl_kafka["sasl"],
        f"mongodb://svc-user:{password}@{host}{MECHANISMS['plain']}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username=SASL_USER,
        kafka_sasl_password=SASL_PASSWORD,
        log_level="DEBUG",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=sasl_kafka["plaintext"])
    await admin.start()
    topics = all_topics(service.settings)
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
        yield service
    finally:
        await admin.delete_topics(topics)
        await admin.close()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        await client.drop_database(service.settings.mongodb_database)
        await client.close()


def _scan(process: ConsumerProcess) -> list[str]:
    bodies = [process.http_get(path)[1].decode() for path in ("/metrics", "/readyz", "/healthz")]
    return _leaks("\n".join(process.raw + bodies)) + _leaks_of(WRONG_PASSWORD, "\n".join(bodies))


def _leaks_of(secret: str, text: str) -> list[str]:
    return sorted(form for form in _forms(secret) if form in text)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_the_consumer_works_through_a_real_sasl_listener_and_prints_no_credentials(
    sasl_service: ServiceEnv, sasl_kafka: dict[str, str], mongodb_uri: str, mechanism: str
) -> None:
    service = sasl_service.with_overrides(kafka_sasl_mechanism=mechanism)
    settings = service.settings
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    the_pass = a_pass("USABLE", timedelta(hours=1))
    await client[settings.mongodb_database][settings.collection_cache].insert_one(
        a_user(31337, [the_pass])
    )
    await client.close()
    process = ConsumerProcess(service).start()
    try:
        await produce_json(
            sasl_kafka["plaintext"],
            settings.topic_ticket_used,
            [ticket_used(31337, the_pass["pass_uuid"])],
        )
        (change,) = await read_topic(
            sasl_kafka["plaintext"], settings.topic_status_changed, expect=1
        )
        assert orjson.loads(change.value)["status_log"] == "USABLE -> USING"
        assert process.http_get("/healthz")[0] == 200
        leaks = _scan(process)
    finally:
        code = process.stop()
    assert code == 0
    assert "svc-user:***@" in "\n".join(process.raw)  # the URI is shown, redacted
    assert leaks == []
    assert _leaks("\n".join(process.raw)) == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_sasl_password_fails_startup_without_printing_any_password(
    sasl_service: ServiceEnv, mechanism: str
) -> None:
    service = sasl_service.with_overrides(
        kafka_sasl_mechanism=mechanism, kafka_sasl_password=WRONG_PASSWORD
    )
    process = ConsumerProcess(service)
    with contextlib.suppress(AssertionError):  # it never gets to consumer_started
        process.start(wait_assigned=False, timeout=1)
    try:
        process.wait_for("startup_waiting", timeout=60, count=2)
        assert process.http_get("/readyz")[0] == 503
        assert process.http_get("/healthz")[0] == 200  # waiting, not wedged
        text = "\n".join(process.raw)
        assert "Authentication failed" in text or "SaslAuthenticationFailed" in text, text[-3000:]
        leaks = _scan(process) + _leaks_of(WRONG_PASSWORD, text)
    finally:
        process.stop()
    assert leaks == []
    assert _leaks_of(WRONG_PASSWORD, "\n".join(process.raw)) == []
    assert _leaks("\n".join(process.raw)) == []
