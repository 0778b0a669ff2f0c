"""`make demo` (scripts/demo.py) on a fresh deployment: status changes printed, and no line a
new user would read as a failure (issue 22: aiokafka's "NotLeaderForPartitionError,
retrying" at start, printed as free text, looked like one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import REPO
from tests.integration.harness import service_environment


def _error_lines(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        if "Traceback" in line or "ERROR" in line:
            bad.append(line)
            continue
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("level") in {"error", "critical"}:
                bad.append(line)
    return bad


def test_the_demo_prints_changes_and_no_error_line(
    kafka_bootstrap: str, mongodb_uri: str, unique_name: str, tmp_path: Path
) -> None:
    service = service_environment(unique_name, kafka_bootstrap, mongodb_uri)
    consumer_log = tmp_path / "consumer.log"
    env = {**os.environ, **service.env, "PASS_STATUS_HTTP_PORT": "0"}
    done = subprocess.run(
        [
            sys.executable,
            "scripts/demo.py",
            "--users",
            "5",
            "--duration",
            "25",
            "--consumer-log",
            str(consumer_log),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    assert "USABLE -> USING" in done.stdout, printed[-3000:]
    assert _error_lines(printed) == []
    assert _error_lines(consumer_log.read_text()) == []
