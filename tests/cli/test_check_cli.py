"""``python -m consumer check --input``: the old job over a file, through a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from consumer.schemas import CHECK_LOG, validator

REPO = Path(__file__).resolve().parents[2]
NOW = "2024-06-01T12:00:00Z"
NOW_MS = 1717243200000
PAST = "2024-06-01T11:00:00+0000"
FUTURE = "2024-06-01T13:00:00+0000"


def run_check(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )


def check_logs(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    documents = [orjson.loads(line) for line in result.stdout.splitlines()]
    for document in documents:
        validator(CHECK_LOG)(document)
    return documents


def a_pass(uuid: str, status: str, expiration: Any, first_use: Any = None) -> dict[str, Any]:
    return {
        "pass_uuid": uuid,
        "status": status,
        "timestamp": 1,
        "free_ticket_status": 0,
        "payload_hash": "h",
        "payload": {"uuid": uuid, "expiration": expiration, "first_use": first_use, "x": [1.5]},
    }


def relaxed_docs() -> list[dict[str, Any]]:
    """What ``mongoexport`` (relaxed) writes: $oid, $date, plain numbers."""
    return [
        {
            "_id": {"$oid": "65f000000000000000000001"},
            "user_id": 30,
            "timestamp": 1717000000000,
            "passes": [
                a_pass("u30-a", "USABLE", {"$date": "2024-06-01T11:00:00Z"}),
                a_pass("u30-b", "USABLE", FUTURE, "2024-06-01T11:30:00Z"),
                a_pass("u30-c", "BROKEN", FUTURE),
            ],
            "passes4": [{"anything": True}],
        },
        {
            "_id": {"$oid": "65f000000000000000000002"},
            "user_id": 10,
            "passes": [a_pass("u10-a", "USING", PAST), a_pass("u10-b", "EXPIRED", PAST)],
        },
        {
            "_id": {"$oid": "65f000000000000000000003"},
            "user_id": 20,
            "passes": [a_pass("u20-a", "USABLE", FUTURE)],
            "passesLog": [],
        },
    ]


def canonical_docs() -> list[dict[str, Any]]:
    """Canonical Extended JSON: every number wrapped, dates as $numberLong milliseconds."""
    expired = {"$date": {"$numberLong": "1717239600000"}}  # 11:00Z
    later = {"$date": {"$numberLong": "1717246800000"}}  # 13:00Z
    return [
        {
            "_id": {"$oid": "65f000000000000000000004"},
            "user_id": {"$numberInt": "40"},
            "timestamp": {"$numberLong": "1717000000000"},
            "price": {"$numberDecimal": "1.10"},
            "ratio": {"$numberDouble": "0.1"},
            "blob": {"$binary": {"base64": "AAE=", "subType": "00"}},
            "passes": [
                {
                    "pass_uuid": "u40-a",
                    "status": "USING",
                    "payload": {"expiration": expired, "uses_count": {"$numberInt": "1"}},
                },
                {"pass_uuid": "u40-b", "status": "USABLE", "payload": {"expiration": later}},
            ],
        },
        {
            "_id": {"$oid": "65f000000000000000000005"},
            "user_id": {"$numberLong": "50"},
            "passes": [
                {"pass_uuid": "u50-a", "status": "USABLE", "payload": {"expiration": later}},
            ],
        },
    ]


def write_ndjson(path: Path, docs: list[dict[str, Any]], blank_after_first: bool = True) -> None:
    lines = [orjson.dumps(d) + b"\n" for d in docs]
    if blank_after_first:
        lines.insert(1, b"\n")
    path.write_bytes(b"".join(lines))


def without_statuses(doc: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    for item in copied.get("passes", []):
        item.pop("status", None)
    return copied


def statuses(doc: dict[str, Any]) -> list[str]:
    return [p["status"] for p in doc["passes"]]


def test_dry_run_prints_the_check_log_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "cache.ndjson"
    write_ndjson(source, relaxed_docs())
    before = source.read_bytes()

    (log,) = check_logs(run_check("--input", source, "--now", NOW))

    assert log == {
        "_id": NOW_MS,
        "check_userID": "all users",
        "editMode": False,
        "check_time": "2024-06-01T12:00:00.000Z",
        "log": [
            {
                "user_id": 10,
                "invalid_list": [{"pass_uuid": "u10-a", "status_log": "USING -> EXPIRED"}],
                "skipped_list": [],
            },
            {
                "user_id": 30,
                "invalid_list": [
                    {"pass_uuid": "u30-a", "status_log": "USABLE -> EXPIRED"},
                    {"pass_uuid": "u30-b", "status_log": "USABLE -> USING"},
                ],
                "skipped_list": [{"pass_uuid": "u30-c", "reason": "unknown status 'BROKEN'"}],
            },
        ],
    }
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.ndjson"]


def test_apply_on_ndjson_changes_due_statuses_and_keeps_untouched_lines_byte_identical(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    # CRLF line endings and a blank line must come through as they were.
    lines = [orjson.dumps(d) + b"\r\n" for d in relaxed_docs()]
    source.write_bytes(lines[0] + b"\r\n" + lines[1] + lines[2].rstrip(b"\r\n"))

    (log,) = check_logs(run_check("--input", source, "--now", NOW, "--apply", "--output", target))

    assert log["editMode"] is True
    out_lines = target.read_bytes().split(b"\r\n")
    assert len(out_lines) == 4
    assert out_lines[1] == b""  # the blank line
    assert out_lines[3] == lines[2].rstrip(b"\r\n")  # user 20: nothing due, same bytes
    changed_30, changed_10 = orjson.loads(out_lines[0]), orjson.loads(out_lines[2])
    assert statuses(changed_30) == ["EXPIRED", "USING", "BROKEN"]
    assert statuses(changed_10) == ["EXPIRED", "EXPIRED"]
    originals = relaxed_docs()
    assert without_statuses(changed_30) == without_statuses(originals[0])
    assert without_statuses(changed_10) == without_statuses(originals[1])
    assert list(changed_30) == list(originals[0])  # key order kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson", "out.ndjson"]


def test_apply_on_a_json_array_writes_an_array(tmp_path: Path) -> None:
    source, target = tmp_path / "in.json", tmp_path / "out.json"
    source.write_bytes(b"  \n" + orjson.dumps(relaxed_docs(), option=orjson.OPT_INDENT_2))

    check_logs(run_check("--input", source, "--now", NOW, "--apply", "--output", target))

    written = target.read_bytes()
    assert written.startswith(b"[\n")
    output = orjson.loads(written)
    assert [statuses(d) for d in output] == [
        ["EXPIRED", "USING", "BROKEN"],
        ["EXPIRED", "EXPIRED"],
        ["USABLE"],
    ]
    assert [without_statuses(d) for d in output] == [without_statuses(d) for d in relaxed_docs()]


def test_an_empty_array_and_an_empty_file_check_nothing(tmp_path: Path) -> None:
    for name, content, expected in [("a.json", b"[]", b"[]\n"), ("e.ndjson", b"", b"")]:
        source, target = tmp_path / name, tmp_path / f"out-{name}"
        source.write_bytes(content)
        (log,) = check_logs(run_check("--input", source, "--apply", "--output", target))
        assert log["log"] == []
        assert target.read_bytes() == expected


def test_canonical_extended_json_round_trips_keeping_every_wrapper(tmp_path: Path) -> None:
    source, target = tmp_path / "canonical.ndjson", tmp_path / "out.ndjson"
    write_ndjson(source, canonical_docs(), blank_after_first=False)

    (log,) = check_logs(run_check("--input", source, "--now", NOW, "--apply", "--output", target))

    assert [(e["user_id"], e["invalid_list"]) for e in log["log"]] == [
        (40, [{"pass_uuid": "u40-a", "status_log": "USING -> EXPIRED"}])
    ]
    first, second = target.read_bytes().splitlines()
    expected = canonical_docs()[0]
    expected["passes"][0]["status"] = "EXPIRED"
    assert first == orjson.dumps(expected)  # same Extended JSON, byte for byte
    assert second == orjson.dumps(canonical_docs()[1])


def test_user_restricts_the_check_and_leaves_other_documents_unchanged(tmp_path: Path) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    write_ndjson(source, relaxed_docs())

    (log,) = check_logs(
        run_check("--input", source, "--now", NOW, "--user", "10", "--apply", "--output", target)
    )

    assert log["check_userID"] == 10
    assert [e["user_id"] for e in log["log"]] == [10]
    in_lines, out_lines = source.read_bytes().splitlines(), target.read_bytes().splitlines()
    assert out_lines[0] == in_lines[0]  # user 30 was due, but not selected
    assert statuses(orjson.loads(out_lines[2])) == ["EXPIRED", "EXPIRED"]


def test_output_may_replace_the_input_file(tmp_path: Path) -> None:
    source = tmp_path / "cache.ndjson"
    write_ndjson(source, relaxed_docs())
    check_logs(run_check("--input", source, "--now", NOW, "--apply", "--output", source))
    docs = [orjson.loads(line) for line in source.read_bytes().splitlines() if line.strip()]
    assert [statuses(d) for d in docs][1] == ["EXPIRED", "EXPIRED"]


def test_now_defaults_to_the_current_time(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    doc = {"user_id": 1, "passes": [a_pass("p", "USABLE", "2001-01-01T00:00:00Z")]}
    write_ndjson(source, [doc], blank_after_first=False)
    started = datetime.now(UTC)
    (log,) = check_logs(run_check("--input", source))
    checked_at = datetime.fromisoformat(log["check_time"])
    assert abs((checked_at - started).total_seconds()) < 30
    assert log["log"][0]["invalid_list"] == [{"pass_uuid": "p", "status_log": "USABLE -> EXPIRED"}]


def test_bad_passes_are_reported_not_fatal(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    doc = {
        "user_id": 1,
        "passes": [
            "junk",
            a_pass("p", "USABLE", "2024-13-45"),
            a_pass("q", "USING", None),
            a_pass("p", "USING", PAST),
        ],
    }
    write_ndjson(source, [doc], blank_after_first=False)
    (log,) = check_logs(run_check("--input", source, "--now", NOW))
    assert log["log"][0]["skipped_list"] == [
        {"pass_uuid": None, "reason": "pass is not an object"},
        {"pass_uuid": "p", "reason": "unreadable expiration '2024-13-45'"},
        {"pass_uuid": "q", "reason": "missing expiration"},
        {"pass_uuid": "p", "reason": "duplicate pass_uuid 'p'"},
    ]


GOOD = orjson.dumps({"user_id": 1, "passes": []})


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "cannot read"),
        (GOOD + b"\n{not json\n", [], "line 2: invalid JSON"),
        (b"[" + GOOD + b",", [], "invalid JSON"),
        (GOOD + b"\n[1, 2]\n", [], "line 2: document is not a JSON object"),
        (b"[" + GOOD + b", 7]", [], "index 1: document is not a JSON object"),
        (GOOD + b'\n{"passes": []}\n', [], "line 2: user_id is missing"),
        (b'[{"user_id": "12"}]', [], "index 0: user_id is not an integer: '12'"),
        (GOOD + b'\n{"user_id": 1.5}\n', ["--user", "1"], "line 2: user_id is not an integer"),
        (GOOD, ["--apply"], "--apply with --input needs --output"),
        (GOOD, ["--now", "yesterday"], "argument --now: unreadable time 'yesterday'"),
        (GOOD, ["--user", "0"], "argument --user: must be a positive integer"),
        (GOOD, ["--user", "abc"], "argument --user: not an integer"),
        (GOOD, ["--user", "1", "--all"], "not allowed with argument"),
        (GOOD, ["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (GOOD, ["--input"], "expected one argument"),
    ],
)
def test_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, content: bytes | None, args: list[str], message: str
) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    if content is not None:
        source.write_bytes(content)
    apply = [] if "--apply" in args else ["--apply", "--output", str(target)]

    result = run_check("--input", source, *apply, *args)

    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pass-status: error: ")
    assert message in lines[0]
    assert "Traceback" not in lines[0]
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in.ndjson"] if content else [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "{out}"], "--output needs --apply"),
        (["--apply", "--output", "{missing}/out.json"], "--output directory does not exist"),
    ],
)
def test_output_argument_errors(tmp_path: Path, args: list[str], message: str) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(GOOD)
    filled = [a.format(out=tmp_path / "out", missing=tmp_path / "missing") for a in args]
    result = run_check("--input", source, *filled)
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("pass-status: error: check: ")
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson"]


def test_a_bad_document_late_in_the_file_leaves_no_output_file(tmp_path: Path) -> None:
    source, target = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    good = [{"user_id": u, "passes": [a_pass(f"p{u}", "USING", PAST)]} for u in range(1, 500)]
    write_ndjson(source, [*good, {"user": "no id"}], blank_after_first=False)
    result = run_check("--input", source, "--now", NOW, "--apply", "--output", target)
    assert result.returncode == 2
    assert b"line 500: user_id is missing" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["check"], "check: give --input FILE, --user ID or --all"),
        (["check", "--all", "--now", NOW], "check: --now needs --input FILE"),
        (["check", "--user", "3", "--output", "x"], "check: --output needs --input FILE"),
        (["tick", "--mode", "sometimes"], "argument --mode: invalid choice"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_argument_errors_before_any_connection_exit_2_with_one_line(
    argv: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", *argv],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("pass-status: error: ")
    assert message in line
