"""A Kafka broker of one test module: ``scripts/services up --sasl`` in a temporary state
directory on free ports (the shared Kafka is never touched, and concurrent test runs each get
their own), stopped and wiped afterwards. Its one SASL user accepts its password with PLAIN
and SCRAM-SHA-512; its PLAINTEXT listener serves tools and test clients."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVICES_SCRIPT


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def sasl_kafka(
    state: Path, mongodb_uri: str, user: str, password: str, **local: str
) -> Iterator[dict[str, str]]:
    """``plaintext`` and ``sasl`` bootstrap addresses of a broker started for the block;
    ``local`` sets further ``PASS_STATUS_LOCAL_KAFKA_*`` variables (``extra_properties=...``)."""
    port, controller, sasl = free_ports(3)
    env = {k: v for k, v in os.environ.items() if k != "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        PASS_STATUS_STATE=str(state),
        PASS_STATUS_LOCAL_KAFKA_PORT=str(port),
        PASS_STATUS_LOCAL_KAFKA_CONTROLLER_PORT=str(controller),
        PASS_STATUS_LOCAL_KAFKA_SASL_PORT=str(sasl),
        PASS_STATUS_MONGODB_URI=mongodb_uri,  # only Kafka is started
        PASS_STATUS_LOCAL_KAFKA_HEAP="256m",
        PASS_STATUS_LOCAL_KAFKA_SASL_USERNAME=user,
        PASS_STATUS_LOCAL_KAFKA_SASL_PASSWORD=password,
    )
    env.update({f"PASS_STATUS_LOCAL_KAFKA_{k.upper()}": v for k, v in local.items()})
    services = str(SERVICES_SCRIPT)
    try:
        up = subprocess.run(
            [services, "up", "--sasl"], check=False, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        if up.returncode != 0:
            pytest.fail(f"scripts/services up --sasl failed:\n{up.stderr}", pytrace=False)
        yield {"plaintext": f"127.0.0.1:{port}", "sasl": f"127.0.0.1:{sasl}"}
    finally:
        subprocess.run(
            [services, "down", "--wipe"], check=False, env=env, capture_output=True, timeout=120
        )
