"""Settings that cannot work stop ``python -m consumer run`` at once (issue 12, item 8):
exit 2, one line on stderr naming the variable, no traceback, nothing contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Nothing listens there: a run that got past its settings would wait, not do harm.
UNREACHABLE = {
    "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "PASS_STATUS_MONGODB_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100",
    "PASS_STATUS_HTTP_PORT": "0",
}


def run_with(settings: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASS_STATUS_")}
    env.update(UNREACHABLE, **settings)
    try:
        return subprocess.run(
            [sys.executable, "-m", "consumer", "run"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`run` accepted {settings} and kept running")


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"PASS_STATUS_MONGODB_URI": "http://x"}, "PASS_STATUS_MONGODB_URI"),
        ({"PASS_STATUS_MONGODB_URI": "mongodb://h:notaport"}, "PASS_STATUS_MONGODB_URI"),
        ({"PASS_STATUS_CONFLICT_RETRIES": "-1"}, "PASS_STATUS_CONFLICT_RETRIES"),
        ({"PASS_STATUS_MONGODB_WRITE_CONCERN": "majorty"}, "PASS_STATUS_MONGODB_WRITE_CONCERN"),
        ({"PASS_STATUS_SHUTDOWN_GRACE_SECONDS": "-5"}, "PASS_STATUS_SHUTDOWN_GRACE_SECONDS"),
        ({"PASS_STATUS_FETCH_TIMEOUT_MS": "-1"}, "PASS_STATUS_FETCH_TIMEOUT_MS"),
        (
            {"PASS_STATUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "PASS_STATUS_KAFKA_SASL_USERNAME",
        ),
        ({"PASS_STATUS_CHECK_LOG_MAX_BYTES": "2000000"}, "PASS_STATUS_CHECK_LOG_MAX_BYTES"),
        ({"PASS_STATUS_MONGODB_WRITE_CONCERN": "0"}, "PASS_STATUS_MONGODB_WRITE_CONCERN"),
        ({"PASS_STATUS_BACKOFF_INITIAL_SECONDS": "nan"}, "PASS_STATUS_BACKOFF_INITIAL_SECONDS"),
        ({"PASS_STATUS_BACKOFF_MAX_SECONDS": "inf"}, "PASS_STATUS_BACKOFF_MAX_SECONDS"),
    ],
    ids=[
        "http_uri",
        "bad_port",
        "negative_retries",
        "bogus_write_concern",
        "negative_grace",
        "negative_fetch_timeout",
        "sasl_without_username",
        "check_log_above_request_size",
        "unacknowledged_write_concern",
        "nan_backoff",
        "infinite_backoff",
    ],
)
def test_a_setting_that_cannot_work_exits_2_with_one_line_naming_it(
    settings: dict[str, str], variable: str
) -> None:
    result = run_with(settings)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pass-status: error: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr.decode()


def test_a_uri_password_never_appears_in_the_error() -> None:
    result = run_with({"PASS_STATUS_MONGODB_URI": "mongodb://u:s3cr3t@h:notaport/"})
    assert result.returncode == 2
    assert b"s3cr3t" not in result.stderr
