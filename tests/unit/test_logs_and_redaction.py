"""Log lines are JSON with one event name, and never carry a secret."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
from consumer import logs
from consumer.redact import redact_uri, scrub, uri_password


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mongodb://user:s3cret@host:27017/db", "mongodb://user:***@host:27017/db"),
        ("mongodb+srv://a:b@c.example/?x=1", "mongodb+srv://a:***@c.example/?x=1"),
        ("mongodb://host:27017", "mongodb://host:27017"),
        ("see mongodb://u:p%40w@h and more", "see mongodb://u:***@h and more"),
    ],
)
def test_redact_uri_hides_the_password_only(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_uri_password_is_decoded() -> None:
    assert uri_password("mongodb://u:p%40w@h") == "p@w"
    assert uri_password("mongodb://h") == ""


def test_scrub_replaces_configured_secrets_anywhere() -> None:
    assert scrub("auth failed for pw=hunter2!", ("hunter2",)) == "auth failed for pw=***!"


def test_log_lines_are_json_with_fields_and_scrubbed() -> None:
    stream = io.StringIO()
    logs.configure("INFO", ("topsecret",), stream=stream)
    try:
        log = logs.get_logger("test")
        log.info("batch_committed", topic="t", partition=1, offset=42, note="pw topsecret")
        log.debug("not_shown")
        try:
            raise RuntimeError("connect mongodb://me:topsecret@db failed")
        except RuntimeError:
            log.exception("store_failed", user_id=5)
    finally:
        logging.getLogger().handlers.clear()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["batch_committed", "store_failed"]
    assert lines[0]["partition"] == 1
    assert lines[0]["offset"] == 42
    assert lines[0]["level"] == "info"
    assert "topsecret" not in stream.getvalue()
    assert lines[1]["error_type"] == "RuntimeError"
    assert lines[1]["user_id"] == 5


def test_library_log_lines_get_a_snake_case_event_and_keep_their_text() -> None:
    """aiokafka and pymongo log free text; the line's event is a stable snake_case name
    derived from the message template, and the text goes to ``message``."""
    stream = io.StringIO()
    logs.configure("INFO", ("topsecret",), stream=stream)
    try:
        logging.getLogger("aiokafka.consumer.group_coordinator").warning(
            "Heartbeat failed for group %s because it is rebalancing", "g1"
        )
        logging.getLogger("aiokafka.conn").error("%s: connection to broker lost", "topsecret")
        logging.getLogger("pymongo.serverSelection").info("Server selection started")
    finally:
        logging.getLogger().handlers.clear()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "aiokafka_heartbeat_failed_for_group",
        "aiokafka_connection_to_broker_lost",
        "pymongo_server_selection_started",
    ]
    assert lines[0]["message"] == "Heartbeat failed for group g1 because it is rebalancing"
    assert lines[0]["logger"] == "aiokafka.consumer.group_coordinator"
    assert "topsecret" not in stream.getvalue()
