"""``python -m consumer dead-letters``: bad arguments exit 2 with one line on stderr, before
any connection is made (no services needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "dead-letters", *args],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
        # Nothing listens there: a command that got past its arguments would fail with 1.
        env={"PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "dead-letters: the following arguments are required: ACTION"),
        (("purge",), "dead-letters: argument ACTION: invalid choice: 'purge'"),
        (("list", "--reason", "typo"), "dead-letters list: argument --reason: invalid choice"),
        (("replay", "--since", "yesterday"), "dead-letters replay: argument --since"),
        (("replay", "--from-offset", "-1"), "dead-letters replay: argument --from-offset"),
        (("replay", "--limit", "0"), "dead-letters replay: argument --limit"),
        (
            ("replay", "--from-offset", "9", "--to-offset", "3"),
            "dead-letters replay: --from-offset must not exceed --to-offset",
        ),
        (
            ("list", "--since", "2026-03-02", "--until", "2026-03-01"),
            "dead-letters list: --since must be before --until",
        ),
        (("list", "--dry-run"), "unrecognized arguments: --dry-run"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pass-status: error: ")
    assert message in lines[0]


def test_unreachable_kafka_is_a_runtime_failure() -> None:
    done = run("list")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1].startswith("pass-status: error: cannot")
