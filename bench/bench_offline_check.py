"""Benchmark of the offline check: throughput, and memory that does not grow with the file.

Generates (streamed, in a temporary directory) an NDJSON export of N users x 3 passes in
the relaxed Extended JSON ``mongoexport`` writes, in which every user has something to
report (the worst case for the check log): one pass expired, one used, one terminal. Runs
``python -m consumer check --input ... --apply --output ...`` as a subprocess, and reports
passes/s and the subprocess's peak RSS. The same is run with N/ratio users, side by side:
the RSS ratio shows whether memory grows with the file (it should stay close to 1).

    uv run python -m bench.bench_offline_check                 # 1,000,000 users
    uv run python -m bench.bench_offline_check --users 200     # the smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOW = "2024-06-01T12:00:00Z"
_DOC = (
    b'{"_id":{"$oid":"%024x"},"user_id":%d,"timestamp":1717200000000,"passes":['
    b'{"pass_uuid":"%d-a","status":"USABLE","timestamp":1717200000000,"free_ticket_status":0,'
    b'"payload_hash":"h%d","payload":{"uuid":"%d-a","status":"USABLE",'
    b'"expiration":"2024-06-01T11:00:00+0000","first_use":null,"allowed_uses":1,"uses_count":0,'
    b'"time_created":{"$date":"2024-05-01T00:00:00Z"}}},'
    b'{"pass_uuid":"%d-b","status":"USABLE","timestamp":1717200000000,"free_ticket_status":0,'
    b'"payload_hash":"h%d","payload":{"uuid":"%d-b","status":"USABLE",'
    b'"expiration":{"$date":"2024-06-02T00:00:00Z"},"first_use":"2024-06-01T11:30:00+0000",'
    b'"allowed_uses":1,"uses_count":1,"time_created":{"$date":"2024-05-01T00:00:00Z"}}},'
    b'{"pass_uuid":"%d-c","status":"EXPIRED","timestamp":1717200000000,"free_ticket_status":0,'
    b'"payload_hash":"h%d","payload":{"uuid":"%d-c","status":"EXPIRED",'
    b'"expiration":"2024-05-01T00:00:00+0000","first_use":"2024-04-30T10:00:00+0000",'
    b'"allowed_uses":1,"uses_count":1,"time_created":{"$date":"2024-04-01T00:00:00Z"}}}'
    b'],"passes4":[],"passesLog":[],"passes4Log":[]}\n'
)
PASSES_PER_USER = 3


@dataclass(frozen=True, slots=True)
class Measurement:
    users: int
    input_bytes: int
    seconds: float
    peak_rss_kib: int
    log_lines: int

    @property
    def passes_per_second(self) -> float:
        return self.users * PASSES_PER_USER / self.seconds


def generate(path: Path, users: int) -> None:
    """Write the export one user at a time (the generator's memory is constant too)."""
    with path.open("wb", buffering=1024 * 1024) as out:
        for user in range(1, users + 1):
            out.write(_DOC % ((user, user) + (user,) * 9))


def run_check(directory: Path, users: int) -> Measurement:
    source = directory / f"cache-{users}.ndjson"
    target = directory / f"out-{users}.ndjson"
    log_path = directory / f"checklog-{users}.ndjson"
    generate(source, users)
    argv = [sys.executable, "-m", "consumer", "check", "--input", str(source)]
    argv += ["--now", NOW, "--apply", "--output", str(target)]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err_path = directory / f"stderr-{users}.txt"
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    started = time.perf_counter()
    try:
        # posix_spawn + wait4 give this one child's peak RSS (RUSAGE_CHILDREN would give
        # the maximum over every child so far).
        pid = os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, err_fd, 2),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
    finally:
        os.close(log_fd)
        os.close(err_fd)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        msg = f"check exited {code}: {err_path.read_text()}"
        raise RuntimeError(msg)
    with log_path.open("rb") as log:
        log_lines = sum(1 for _ in log)
    measurement = Measurement(users, source.stat().st_size, seconds, usage.ru_maxrss, log_lines)
    for path in (source, target, log_path, err_path):
        path.unlink()
    return measurement


def _report(m: Measurement) -> str:
    return (
        f"{m.users:>10,} users {m.users * PASSES_PER_USER:>10,} passes "
        f"{m.input_bytes / 2**20:>8.1f} MiB in {m.seconds:>7.2f} s "
        f"{m.passes_per_second:>10,.0f} passes/s  peak RSS {m.peak_rss_kib / 1024:>6.1f} MiB  "
        f"check-log documents {m.log_lines}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--ratio", type=int, default=10, help="also run users/ratio users")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args(argv)
    small_users = max(1, args.users // args.ratio)
    with tempfile.TemporaryDirectory(prefix="bench-offline-", dir=args.dir) as directory:
        small = run_check(Path(directory), small_users)
        large = run_check(Path(directory), args.users)
    print(f"offline check, --apply --output, NDJSON, now={NOW}, python {sys.version.split()[0]}")
    print(_report(small))
    print(_report(large))
    print(
        f"side by side: {large.users / small.users:.0f}x the users -> "
        f"{large.peak_rss_kib / small.peak_rss_kib:.2f}x the peak RSS, "
        f"{large.passes_per_second / small.passes_per_second:.2f}x the passes/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
