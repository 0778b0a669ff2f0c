"""Credentials never show: not in logs, not in /metrics or the health endpoints, not in
error messages of the consumer or of the one-shot commands.

The consumer runs with a MongoDB URI holding a user and password (FerretDB does not
enforce authentication here, or refuses it: either way the output is scanned) and with
Kafka SASL PLAIN settings against the PLAINTEXT broker, so every Kafka connection fails
and the error paths print what they print.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest

from tests.integration.harness import REPO, ServiceEnv

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
