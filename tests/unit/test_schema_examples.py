"""Every event schema documents itself: descriptions and examples, and each example is valid
against its schema AND accepted by the service's own code for that event."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from consumer import schemas
from consumer.adapters.metrics import DEAD_LETTER_REASONS
from consumer.domain.checklog import UserLog
from consumer.parsing import parse_tick, parse_ticket_used
from consumer.replay import LEGACY_REASONS, parse_dead_letter

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
NAMES = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def _properties(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, sub in schema.get("properties", {}).items():
        out.append((f"{path}{name}", sub))
        out += _properties(sub, f"{path}{name}.")
        if isinstance(sub.get("items"), dict):
            out += _properties(sub["items"], f"{path}{name}[].")
    return out


def test_every_schema_is_listed() -> None:
    assert NAMES == [
        "check-log.v1",
        "dead-letter.v1",
        "pass-status-changed.v1",
        "tick.v1",
        "ticket-used.v1",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_schema_has_description_examples_and_described_fields(name: str) -> None:
    schema = schemas.load_schema(name)
    assert schema["description"]
    assert len(schema["examples"]) >= 2
    undescribed = [path for path, sub in _properties(schema) if not sub.get("description")]
    assert not undescribed, f"{name}: fields without a description: {undescribed}"


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_valid_against_their_schema(name: str) -> None:
    validate = schemas.validator(name)
    for example in schemas.load_schema(name)["examples"]:
        validate(json.loads(json.dumps(example)))  # raises on any violation


def _examples(name: str) -> list[dict[str, Any]]:
    return list(schemas.load_schema(name)["examples"])


def test_ticket_used_examples_pass_the_service_parser() -> None:
    for example in _examples(schemas.TICKET_USED):
        event = parse_ticket_used(orjson.dumps(example), 65536)
        assert event.event_id == example["event_id"]
        assert event.user_id == example["user_id"]


def test_tick_examples_pass_the_service_parser() -> None:
    for example in _examples(schemas.TICK):
        now = datetime.fromisoformat(example["tick_at"])
        tick = parse_tick(orjson.dumps(example), 65536, now, timedelta(minutes=5))
        assert tick.event_id == example["event_id"]
        assert str(tick.mode) == example["mode"]


def test_dead_letter_examples_pass_the_replay_parser() -> None:
    for example in _examples(schemas.DEAD_LETTER):
        letter = parse_dead_letter(orjson.dumps(example), "dlq", 0, 1)
        assert letter.source_topic == example["source_topic"]
        assert letter.reason in DEAD_LETTER_REASONS
        assert [k for k, _ in letter.headers] == [h["key"] for h in example.get("headers", [])]


def test_dead_letter_reasons_match_the_error_tree() -> None:
    schema = schemas.load_schema(schemas.DEAD_LETTER)
    reasons = [*DEAD_LETTER_REASONS, *LEGACY_REASONS]
    assert sorted(schema["properties"]["reason"]["enum"]) == sorted(reasons)


def test_status_changed_examples_match_what_the_service_builds() -> None:
    from consumer.domain.events import Cause, CauseType, status_changed_event  # noqa: PLC0415
    from consumer.domain.rules import Transition  # noqa: PLC0415

    for example in _examples(schemas.PASS_STATUS_CHANGED):
        transition = Transition(
            index=0,
            pass_uuid=example["pass_uuid"],
            from_status=example["from_status"],
            to_status=example["to_status"],
            status_log=example["status_log"],
            effective_at=datetime.fromisoformat(example["effective_at"]),
        )
        built = status_changed_event(
            example["user_id"],
            transition,
            datetime.fromisoformat(example["detected_at"]),
            Cause(CauseType(example["cause"]["type"]), example["cause"]["event_id"]),
        )
        # Same fields and values; only the deterministic event_id differs (made-up example ids).
        assert {k: v for k, v in built.items() if k != "event_id"} == {
            k: v for k, v in example.items() if k != "event_id"
        }


def test_check_log_examples_match_what_the_service_builds() -> None:
    from consumer.domain.checklog import check_log_documents  # noqa: PLC0415

    example = _examples(schemas.CHECK_LOG)[0]
    check_time = datetime.fromisoformat(example["check_time"])
    logs = [
        UserLog(
            user_id=entry["user_id"],
            invalid_list=tuple((i["pass_uuid"], i["status_log"]) for i in entry["invalid_list"]),
            skipped_list=tuple((i["pass_uuid"], i["reason"]) for i in entry["skipped_list"]),
        )
        for entry in example["log"]
    ]
    (built,) = check_log_documents(check_time, None, example["editMode"], logs, 900000)
    assert built == example  # _id included: Unix ms of check_time


def test_dead_letters_written_as_message_too_large_read_as_too_large() -> None:
    (example, *_) = _examples(schemas.DEAD_LETTER)
    letter = parse_dead_letter(orjson.dumps({**example, "reason": "message_too_large"}))
    assert letter.reason == "too_large"
