"""The failure policy (consumer/policy.py): each failure, read by class, server code and
labels (never its message), has one action per path; the doc shows the same tables; and
no other code decides a fate on its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path as FsPath

import pytest
from aiokafka import errors as kafka
from bson.errors import InvalidDocument
from consumer import errors as ours
from consumer.adapters.kafka import publish_error
from consumer.adapters.mongo import store_error
from consumer.policy import (
    ACTIONS,
    Action,
    Fault,
    Path,
    classify,
    classify_write_error,
    decide,
    render_markdown,
)
from pymongo import errors as mongo

REPO = FsPath(__file__).resolve().parents[2]
PACKAGE = REPO / "consumer"


def _failure(code: int, labels: tuple[str, ...] = ()) -> mongo.OperationFailure:
    return mongo.OperationFailure("any text", code, {"code": code, "errorLabels": list(labels)})


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (mongo.AutoReconnect("primary stepped down"), Fault.UNAVAILABLE),
        (mongo.ServerSelectionTimeoutError("no servers"), Fault.UNAVAILABLE),
        (mongo.NetworkTimeout("timed out"), Fault.UNAVAILABLE),
        (_failure(10107), Fault.UNAVAILABLE),  # NotWritablePrimary
        (_failure(91), Fault.UNAVAILABLE),  # ShutdownInProgress
        (_failure(424242, ("RetryableWriteError",)), Fault.UNAVAILABLE),
        (_failure(13), Fault.STORE_REFUSED),  # Unauthorized
        (_failure(85), Fault.CONFIG),  # IndexOptionsConflict
        (_failure(86), Fault.CONFIG),  # IndexKeySpecsConflict
        (mongo.WriteError("x", 121, {"code": 121}), Fault.DOCUMENT),  # validation
        (mongo.WriteError("x", 2, {"code": 2}), Fault.DOCUMENT),  # BadValue
        (mongo.WriteError("x", 14, {"code": 14}), Fault.DOCUMENT),  # TypeMismatch
        (mongo.DuplicateKeyError("x", 11000, {"code": 11000}), Fault.DOCUMENT),
        (mongo.WriteError("x", 17419, {"code": 17419}), Fault.DOCUMENT),  # over 16 MB
        (mongo.WriteError("x", 999999, {"code": 999999}), Fault.DOCUMENT),  # per document
        (mongo.DocumentTooLarge("too large"), Fault.DOCUMENT),
        (InvalidDocument("cannot encode"), Fault.DOCUMENT),
        (mongo.BulkWriteError({"writeErrors": [{"index": 1, "code": 14}]}), Fault.DOCUMENT),
        (mongo.BulkWriteError({"writeErrors": [{"index": 0, "code": 189}]}), Fault.UNAVAILABLE),
        (
            mongo.BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}),
            Fault.UNAVAILABLE,
        ),
        (_failure(999999), Fault.UNAVAILABLE),  # an unknown command error: retried
        (kafka.KafkaConnectionError(), Fault.UNAVAILABLE),
        (kafka.KafkaTimeoutError(), Fault.UNAVAILABLE),
        (kafka.NotLeaderForPartitionError(), Fault.UNAVAILABLE),
        (kafka.NotEnoughReplicasError(), Fault.UNAVAILABLE),
        (kafka.RequestTimedOutError(), Fault.UNAVAILABLE),
        (kafka.TopicAuthorizationFailedError(), Fault.OUTPUT_REFUSED),
        (kafka.UnknownTopicOrPartitionError(), Fault.OUTPUT_REFUSED),
        (kafka.MessageSizeTooLargeError(), Fault.RECORD_REFUSED),
        (kafka.RecordTooLargeError(), Fault.RECORD_REFUSED),
        (ours.UnknownUserError("no user"), Fault.INPUT),
        (ours.WriteConflictError("hot"), Fault.CONTENDED),
        (ours.MissingTopicError("missing"), Fault.CONFIG),
        (KeyError("a bug"), Fault.BUG),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_each_failure_is_read_by_class_code_and_labels(error: BaseException, fault: Fault) -> None:
    assert classify(error).fault is fault


def test_the_message_text_never_decides() -> None:
    """Two errors alike but for their text get the same verdict; two alike but for their
    code do not."""
    loud = mongo.WriteError("E11000 duplicate key not primary timeout", 121, {"code": 121})
    quiet = mongo.WriteError("", 121, {"code": 121})
    assert classify(loud) == classify(quiet)
    assert classify(_failure(10107)).fault is not classify(mongo.WriteError("", 2, {})).fault


def test_a_store_refusal_keeps_its_server_code_through_the_adapter() -> None:
    """Deterministic MongoDB write errors used to be classed transient and retried about
    177 times a second: now they are the user's document's fault, with the code."""
    for code in (121, 2, 14, 11000):
        error = store_error("write_user", 42, mongo.WriteError("refused", code, {"code": code}))
        assert isinstance(error, ours.DocumentRejectedError)
        assert (error.user_id, error.code, error.reason) == (42, code, "store_rejected")
        assert decide(error, Path.INPUT).action is Action.DEAD_LETTER
        assert decide(error, Path.SWEEP_USER).action is Action.SKIP_USER
    transient = store_error("write_user", 42, _failure(11602))
    assert isinstance(transient, ours.StoreUnavailableError)
    assert isinstance(store_error("ping", None, _failure(18)), ours.StoreRefusedError)


def test_a_refused_output_pauses_and_a_refused_record_is_set_aside_only_in_the_outbox() -> None:
    """A refused output topic used to drain good inputs into the dead-letter topic."""
    denied = publish_error("status", kafka.TopicAuthorizationFailedError())
    assert isinstance(denied, ours.PublishRejectedError)
    assert denied.topic == "status"
    assert decide(denied, Path.INPUT).action is Action.PAUSE
    assert decide(denied, Path.OUTBOX_ENTRY).action is Action.PAUSE
    # Over our own max_request_size: that record's fault, set aside in the outbox.
    too_large = publish_error("status", kafka.MessageSizeTooLargeError(), by_client=True)
    assert isinstance(too_large, ours.RecordRejectedError)
    assert decide(too_large, Path.INPUT).action is Action.PAUSE
    assert decide(too_large, Path.OUTBOX_ENTRY).action is Action.SET_ASIDE
    # Refused by the broker: the topic's limit is below what we write; pause, set nothing
    # aside (a topic misconfigured would otherwise drain every event into the rejected list).
    by_topic = publish_error("status", kafka.MessageSizeTooLargeError())
    assert isinstance(by_topic, ours.PublishRejectedError)
    assert decide(by_topic, Path.OUTBOX_ENTRY).action is Action.PAUSE
    away = publish_error("status", kafka.NotLeaderForPartitionError())
    assert isinstance(away, ours.BrokerUnavailableError)
    assert decide(away, Path.INPUT).action is Action.RETRY


def test_only_configuration_refuses_to_start_a_command_with_exit_2() -> None:
    assert decide(ours.ConfigError("bad"), Path.COMMAND).action is Action.REFUSE_TO_START
    assert decide(ours.MissingTopicError("gone"), Path.COMMAND).action is Action.REFUSE_TO_START
    assert decide(ours.StoreUnavailableError("down"), Path.START).action is Action.RETRY


def test_every_fault_has_an_action_on_every_path() -> None:
    assert set(ACTIONS) == set(Fault)
    for row in ACTIONS.values():
        assert set(row) == set(Path)


def test_bulk_write_errors_are_classified_per_operation() -> None:
    assert classify_write_error(14) is Fault.DOCUMENT
    assert classify_write_error(11000) is Fault.DOCUMENT
    assert classify_write_error(10107) is Fault.UNAVAILABLE
    assert classify_write_error(1, ["RetryableWriteError"]) is Fault.UNAVAILABLE


def test_the_reliability_doc_shows_the_policy_as_the_code_has_it() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    match = re.search(r"<!-- policy:begin -->\n(.*?)<!-- policy:end -->", doc, re.DOTALL)
    assert match is not None, "docs/reliability.md has no policy section"
    assert match.group(1) == render_markdown(), (
        "docs/reliability.md's policy tables differ from consumer/policy.py: regenerate them"
    )


def _broad_handlers(tree: ast.AST) -> list[ast.ExceptHandler]:
    broad = {"Exception", "BaseException"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            names = (
                [node.type]
                if not isinstance(node.type, ast.Tuple)
                else list(node.type.elts)
                if node.type
                else []
            )
            if node.type is None or any(isinstance(n, ast.Name) and n.id in broad for n in names):
                found.append(node)
    return found


def test_no_broad_except_decides_a_fate_without_the_policy() -> None:
    """Every ``except Exception`` in the package asks consumer.policy.decide, or only
    cleans up and re-raises: grep finds one place that maps an exception to an action."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for handler in _broad_handlers(tree):
            body = ast.Module(body=handler.body, type_ignores=[])
            calls = {
                n.func.id
                for n in ast.walk(body)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            reraises = isinstance(handler.body[-1], ast.Raise) and handler.body[-1].exc is None
            if "decide" not in calls and not reraises:
                offenders.append(f"{path.relative_to(REPO)}:{handler.lineno}")
    assert offenders == []
