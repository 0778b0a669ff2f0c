"""``tick`` stops promptly on SIGTERM (a Job past its activeDeadlineSeconds), with one line
on stderr and exit 143, instead of waiting for SIGKILL (Python as PID 1 ignores SIGTERM
unless it installs a handler)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: Kafka clients hang on it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_tick_exits_143_promptly_on_sigterm(silent_broker: int) -> None:
    env = {
        **os.environ,
        "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent_broker}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "tick", "--mode", "due"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.5)  # started, waiting for the broker that never answers
    assert proc.poll() is None, proc.communicate()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    elapsed = time.monotonic() - started
    assert proc.returncode == 143, err.decode()
    assert elapsed < 10
    assert out == b""  # no tick was published
    errors = [line for line in err.decode().splitlines() if not line.startswith("{")]
    assert errors == ["pass-status: error: tick: stopped by SIGTERM; no tick was acknowledged"]
