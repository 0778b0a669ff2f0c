"""``check --input --apply --output``: the output file and the check log on stdout
(issue 12, item 7). The check log reaches stdout before the output file is committed, so a
failing stdout leaves no output file and says what failed; the file gets the mode ``cp``
would give it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from tests.cli.test_check_cli import NOW, relaxed_docs, write_ndjson

REPO = Path(__file__).resolve().parents[2]


def run_apply(
    source: Path, target: Path, *, stdout: int | IO[bytes] = subprocess.PIPE, umask: int = 0o022
) -> subprocess.CompletedProcess[bytes]:
    arguments = ["--input", str(source), "--now", NOW, "--apply", "--output", str(target)]
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check", *arguments],
        cwd=REPO,
        stdout=stdout,
        stderr=subprocess.PIPE,
        umask=umask,
        timeout=60,
        check=False,
    )


def test_a_failing_stdout_writes_no_output_file_and_says_stdout_failed(tmp_path: Path) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    write_ndjson(source, relaxed_docs())
    with Path("/dev/full").open("wb") as full:  # every write fails: no space left
        result = run_apply(source, target, stdout=full)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "standard output" in lines[0]
    assert "out.ndjson" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_the_output_file_gets_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    write_ndjson(source, relaxed_docs())
    result = run_apply(source, target, umask=umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_an_existing_output_file_keeps_its_mode(tmp_path: Path) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    write_ndjson(source, relaxed_docs())
    target.write_bytes(b"old")
    target.chmod(0o664)
    result = run_apply(source, target, umask=0o077)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o664
    assert target.read_bytes() != b"old"
