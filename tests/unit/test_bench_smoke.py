"""The offline-check benchmark still runs end to end (tiny size), so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_offline_check_bench_runs_and_reports_throughput_and_memory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_offline_check", "--users", "200", "--dir", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.lstrip().startswith("200 users") and "passes/s" in line for line in lines)
    assert any(line.lstrip().startswith("20 users") and "peak RSS" in line for line in lines)
    assert "x the peak RSS" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # the generated files are cleaned up
