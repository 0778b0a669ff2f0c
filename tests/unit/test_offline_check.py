"""The offline runner in-process: streamed check logs equal the in-memory ones, parts included."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import pytest
from consumer.domain.checklog import UserLog, check_log_documents
from consumer.errors import FileInputError
from consumer.offline.check import OfflineCheck, run_offline_check
from consumer.offline.formats import AtomicOutput, InputFormat, detect_format
from consumer.offline.logspill import SortedLogSpill

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def _logs(count: int) -> list[UserLog]:
    rng = random.Random(7)
    return [
        UserLog(rng.randrange(1, 50), ((f"p{i}", "USING -> EXPIRED"),), ((None, f"r{i}"),))
        for i in range(count)
    ]


@pytest.mark.parametrize(("run_size", "max_runs"), [(1000, 100), (3, 100), (3, 2)])
def test_spill_yields_entries_sorted_stably_however_it_spills(run_size: int, max_runs: int) -> None:
    logs = _logs(40)
    with SortedLogSpill(run_size=run_size, max_runs=max_runs) as spill:
        for log in logs:
            spill.add(log)
        expected = sorted(logs, key=lambda log: log.user_id)  # stable
        for _ in range(2):  # re-iterable
            entries = list(spill.entries())
            assert [e.user_id for e in entries] == [log.user_id for log in expected]
            assert [orjson.loads(e.json)["invalid_list"][0]["pass_uuid"] for e in entries] == [
                log.invalid_list[0][0] for log in expected
            ]


def _write_input(path: Path, users: int) -> None:
    lines = []
    for user in range(users, 0, -1):
        passes = [
            {"pass_uuid": f"{user}-{i}", "status": "USING", "payload": {"expiration": "2024-01-01"}}
            for i in range(3)
        ]
        lines.append(orjson.dumps({"user_id": user, "passes": passes}))
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_streamed_parts_equal_the_in_memory_check_log_documents(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    _write_input(source, 120)
    out = io.BytesIO()
    check = OfflineCheck(input_path=source, now=NOW, max_log_bytes=4_000)
    result = run_offline_check(check, out)

    streamed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    logs = [
        UserLog(user, tuple((f"{user}-{i}", "USING -> EXPIRED") for i in range(3)), ())
        for user in range(120, 0, -1)
    ]
    assert streamed == check_log_documents(NOW, None, False, logs, max_bytes=4_000)
    assert len(streamed) == result.log_documents > 1
    assert (result.documents, result.users_checked, result.passes_checked) == (120, 120, 360)
    assert (result.transitions, result.skipped) == (360, 0)


def test_the_check_time_is_taken_to_the_millisecond(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"")
    out = io.BytesIO()
    run_offline_check(OfflineCheck(source, NOW.replace(microsecond=123_987)), out)
    assert orjson.loads(out.getvalue())["check_time"] == "2024-06-01T12:00:00.123Z"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", InputFormat.NDJSON),
        (b" \n\t", InputFormat.NDJSON),
        (b'{"a": 1}', InputFormat.NDJSON),
        (b"\n\n  [ ]", InputFormat.ARRAY),
        (b" " * 70_000 + b"[]", InputFormat.ARRAY),  # past the first read chunk
    ],
)
def test_detect_format_by_first_non_whitespace_byte(
    tmp_path: Path, content: bytes, expected: InputFormat
) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    assert detect_format(path) is expected


def test_a_top_level_value_other_than_an_array_or_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b'"just a string"')
    with pytest.raises(FileInputError, match="line 1: document is not a JSON object"):
        run_offline_check(OfflineCheck(path, NOW), io.BytesIO())


def test_atomic_output_appears_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with AtomicOutput(target) as output:
        output.write(b"partial")
    assert list(tmp_path.iterdir()) == []
    with AtomicOutput(target) as output:
        output.write(b"whole")
        output.commit()
    assert target.read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [target]
