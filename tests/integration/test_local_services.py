"""scripts/services and scripts/run_tests (`make test`) keep track of the servers they start.

Each test starts a FerretDB of its own (state directory and port of its own; Kafka is the
session's, named as external), so the developer's services are never touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, SERVICES_SCRIPT

RUN_TESTS = REPO / "scripts" / "run_tests"
# A test that needs no service and no tool, and one that needs the local store.
OFFLINE_TEST = (
    "tests/unit/test_shell_parts.py::test_backoff_grows_exponentially_with_jitter_and_is_capped"
)
STORE_TEST = "tests/store/test_operations.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Services:
    """scripts/services with a state directory and a FerretDB port of its own."""

    def __init__(self, state: Path, kafka_bootstrap: str, port: int | None = None) -> None:
        self.state = state
        self.port = port or _free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PASS_STATUS_MONGODB_URI", "PASS_STATUS_STATE"}
        }
        self.env.update(
            PASS_STATUS_STATE=str(state),
            PASS_STATUS_LOCAL_MONGODB_PORT=str(self.port),
            PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,  # used, never started
        )

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SERVICES_SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pidfile(self) -> Path:
        return self.state / "ferretdb" / "ferretdb.pid"


@pytest.fixture
def services(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Services]:
    own = Services(tmp_path / "state", kafka_bootstrap)
    try:
        yield own
    finally:
        own.run("down", "--wipe")
        assert not _listening(own.port), "a FerretDB of the test still runs"


def _up(services: Services) -> int:
    done = services.run("up")
    assert done.returncode == 0, done.stderr
    return int(services.pidfile().read_text())


def test_down_stops_a_ferretdb_whose_pid_file_is_gone(services: Services) -> None:
    pid = _up(services)
    services.pidfile().unlink()

    assert services.run("running").stdout.split() == ["ferretdb"]
    down = services.run("down")

    assert down.returncode == 0, down.stderr
    assert f"ferretdb: stopping pid {pid}" in down.stderr
    assert not Path(f"/proc/{pid}").exists()
    assert not _listening(services.port)


def test_a_state_dir_reached_through_a_symlink_keeps_its_pid_file(
    services: Services, tmp_path: Path
) -> None:
    """The defect: FerretDB started through one spelling of the state directory (a symlinked
    checkout) was not recognised through the other; its pid file was deleted as stale, `down`
    said "not running" and the next `up` failed on the port it still held."""
    services.state.mkdir(parents=True)
    link = tmp_path / "linked-state"
    link.symlink_to(services.state)
    kafka = services.env["PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"]
    through_link = Services(link, kafka, services.port)
    pid = _up(through_link)

    again = services.run("up")  # the physical path, as tests resolve it

    assert again.returncode == 0, again.stderr
    assert f"FerretDB already running (pid {pid})" in again.stderr
    assert services.pidfile().read_text().strip() == str(pid)
    down = services.run("down")
    assert f"ferretdb: stopping pid {pid}" in down.stderr
    assert not Path(f"/proc/{pid}").exists()


def test_a_port_held_by_another_state_dir_names_it_and_how_to_stop_it(
    services: Services, tmp_path: Path
) -> None:
    pid = _up(services)
    other = Services(
        tmp_path / "other", services.env["PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"], services.port
    )

    refused = other.run("up")

    assert refused.returncode != 0
    [line] = [x for x in refused.stderr.splitlines() if "error:" in x]
    assert f"port {services.port} is in use by pid {pid}" in line
    assert f"PASS_STATUS_STATE={services.state} scripts/services down" in line
    assert other.run("down").returncode == 0
    assert Path(f"/proc/{pid}").exists(), "down must not stop another state dir's server"


@pytest.mark.parametrize("keep", ["0", "1"])
def test_make_test_stops_the_services_it_started_unless_keep_services(
    services: Services, keep: str
) -> None:
    env = {**services.env, "KEEP_SERVICES": keep}
    done = subprocess.run(
        [str(RUN_TESTS), STORE_TEST, "-k", "test_find_users_with_in", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    running = services.run("running").stdout.split()
    if keep == "1":
        assert running == ["ferretdb"]
        assert "KEEP_SERVICES=1: leaving running what this run started: ferretdb" in done.stderr
    else:
        assert running == []
        assert not _listening(services.port)


def test_make_test_keeps_services_that_were_already_running(services: Services) -> None:
    pid = _up(services)
    done = subprocess.run(
        [str(RUN_TESTS), STORE_TEST, "-k", "test_find_users_with_in", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=services.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert Path(f"/proc/{pid}").exists()


FAKE_GO = """#!/usr/bin/env bash
# Stands in for `go install PKG`: takes its time, then leaves a binary that runs.
set -eu
[[ "$1" == install ]] || exit 1
sleep "$FAKE_GO_SECONDS"
name="$(basename "$2")"
printf '#!/bin/sh\\necho %s fake\\n' "$name" >"$GOBIN/$name"
chmod +x "$GOBIN/$name"
"""


def test_make_test_runs_the_offline_tests_while_the_tools_build(
    services: Services, tmp_path: Path
) -> None:
    """A fresh machine: helm and promtool are missing. The first test must not wait for them."""
    fake = tmp_path / "fake-go"
    fake.mkdir()
    (fake / "go").write_text(FAKE_GO)
    (fake / "go").chmod(0o755)
    cache = tmp_path / "cache"
    _up(services)  # the services are there; only the tools are missing
    env = {
        **services.env,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "PASS_STATUS_CACHE": str(cache),
        "FAKE_GO_SECONDS": "15",
    }
    started = time.monotonic()
    lines = []
    first_pass_at = None
    tools_when_first_passed: list[str] = []
    with subprocess.Popen(
        [str(RUN_TESTS), OFFLINE_TEST, "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if first_pass_at is None and " passed" in line:
                first_pass_at = time.monotonic() - started
                built = [p.name for p in (cache / "bin").glob("*")]
                tools_when_first_passed = sorted(n for n in built if not n.startswith("."))
        rc = process.wait(timeout=300)

    output = "".join(lines)
    assert rc == 0, output[-3000:]
    assert first_pass_at is not None, output[-3000:]
    assert tools_when_first_passed in ([], ["helm"]), (tools_when_first_passed, output[-3000:])
    assert (cache / "bin" / "helm").exists()
    assert (cache / "bin" / "promtool").exists()
