"""The failure policy: what every failure means, and the one action each path takes.

Two steps, both pure (no I/O, no asyncio):

1. :func:`classify` reads an exception (this package's, PyMongo's, aiokafka's, BSON's) by its
   class and, for MongoDB, its server ``code`` and ``errorLabels``, never its message, and
   returns a :class:`Verdict`: a :class:`Fault` and a reason code. The first row of
   :data:`RULES` that matches decides.
2. :func:`decide` turns a fault into the :class:`Action` of the path that met it
   (:data:`ACTIONS`): the consume loop's inputs, one user of a sweep, a background job, the
   start, or a one-shot command.

Every ``except`` that decides a fate calls :func:`decide`; ``docs/reliability.md`` shows both
tables, rendered from this module (``tests/unit/test_policy.py`` keeps them in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aiokafka import errors as kafka
from bson.errors import BSONError
from pymongo import errors as mongo

from consumer import errors as ours
from consumer.policy_codes import (
    DOCUMENT_CODES,
    INDEX_CONFLICT_CODES,
    KAFKA_PRODUCER_STATE_ERRORS,
    KAFKA_RECORD_ERRORS,
    KAFKA_REFUSALS,
    STORE_REFUSED_CODES,
    STORE_TRANSIENT_CODES,
    STORE_TRANSIENT_LABELS,
)


class Fault(StrEnum):
    """What a failure means."""

    UNAVAILABLE = "unavailable"
    """A dependency is down, busy or electing (connection, timeout, not primary, leader
    moving): the same work succeeds later."""
    CONTENDED = "contended"
    """One user's document kept changing under our conditional writes."""
    INPUT = "input"
    """This input can never succeed (not JSON, schema, unknown user or pass, too large)."""
    DOCUMENT = "document"
    """The store refuses this user's document for good (validation, type mismatch,
    duplicate key, over 16 MB) or the document is unusable: other users are fine."""
    RECORD_REFUSED = "record_refused"
    """An output topic refuses a record for what it holds (too large, invalid): that
    record never passes; others may."""
    OUTPUT_REFUSED = "output_refused"
    """An output topic refuses us (not authorized, gone): no input caused it and no retry
    soon fixes it; an operator must act."""
    STORE_REFUSED = "store_refused"
    """MongoDB refuses this service (authentication, authorization)."""
    CONFIG = "config"
    """The settings, the topics or the collection's indexes contradict the service."""
    BUG = "bug"
    """Not foreseen by any rule: treated as the input's fault, so that it is kept (dead-
    lettered with ``internal_error``, replayable once fixed) and the partition moves on."""


class Action(StrEnum):
    """What a path does about a fault."""

    RETRY = "retry"
    """Back off (capped, jittered) and do the same work again; not ready meanwhile;
    nothing committed past it."""
    DEAD_LETTER = "dead_letter"
    """Send the input to the dead-letter topic with its reason; commit past it; go on."""
    SKIP_USER = "skip_user"
    """Report the user in the sweep's check log (``skipped_list``), count it, go on."""
    PAUSE = "pause"
    """Stop consuming the work in hand (seek back, back off), not ready, alert
    (``pass_status_output_refused``); nothing dead-lettered or committed for it."""
    REFUSE_TO_START = "refuse_to_start"
    """Exit 2 with one line saying what to fix (a one-shot command too)."""
    SET_ASIDE = "set_aside"
    """Move the one record at fault out of the way (a status-change event to its
    document's ``pass_status_outbox_rejected``), count it, alert; the rest flows."""
    STOP = "stop"
    """A one-shot command stops with one clear line and exit 1."""


class Path(StrEnum):
    """Where a failure is met."""

    INPUT = "input"
    """The consume loop: a ticket-used batch or record, a tick, their dead letters."""
    SWEEP_USER = "sweep_user"
    """One user of a due or full sweep."""
    OUTBOX_ENTRY = "outbox_entry"
    """One status-change event the relay publishes on its own, to find which one an
    output refuses."""
    BACKGROUND = "background"
    """Periodic jobs: orphaned outbox entries, check-log intervals, probes."""
    START = "start"
    """Startup checks: topics, indexes, settings."""
    COMMAND = "command"
    """One-shot commands: ``tick``, ``check``, ``dead-letters``."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: exceptions of ``kind`` (with one of ``codes`` / ``labels``,
    when given) mean ``fault``; ``reason`` is the dead-letter or metric reason code."""

    kind: type[BaseException] | tuple[type[BaseException], ...]
    fault: Fault
    reason: str
    codes: frozenset[int] = frozenset()
    labels: frozenset[str] = frozenset()
    when: Callable[[BaseException], bool] | None = None
    why: str = ""

    def matches(self, exc: BaseException, code: int | None, labels: frozenset[str]) -> bool:
        if not isinstance(exc, self.kind):
            return False
        if self.codes and code not in self.codes:
            return False
        if self.labels and not self.labels & labels:
            return False
        return self.when is None or self.when(exc)


@dataclass(frozen=True, slots=True)
class Verdict:
    fault: Fault
    reason: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    verdict: Verdict


def _write_errors(exc: BaseException) -> Sequence[Mapping[str, object]]:
    details = getattr(exc, "details", None)
    errors = details.get("writeErrors") if isinstance(details, Mapping) else None
    return errors if isinstance(errors, list) else []


def _refused_documents(exc: BaseException) -> bool:
    """A bulk write whose failures are all per-document, none of the write concern."""
    details = getattr(exc, "details", None)
    concern = details.get("writeConcernErrors") if isinstance(details, Mapping) else None
    return bool(_write_errors(exc)) and not concern


def server_code(exc: BaseException) -> int | None:
    """MongoDB's error code of ``exc``: a bulk write's first per-operation code, else its
    own, else that of its cause (an error of this package raised from a PyMongo one)."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        for error in _write_errors(candidate)[:1]:
            code = error.get("code")
            if isinstance(code, int):
                return code
        code = getattr(candidate, "code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _labels(exc: BaseException) -> frozenset[str]:
    found: set[str] = set()
    for candidate in (exc, exc.__cause__):
        has_label = getattr(candidate, "has_error_label", None)
        details = getattr(candidate, "details", None)
        if callable(has_label) and isinstance(details, Mapping):
            labels = details.get("errorLabels")
            if isinstance(labels, list):
                found.update(str(label) for label in labels)
        own = getattr(candidate, "_error_labels", None)
        if isinstance(own, set | frozenset):
            found.update(str(label) for label in own)
    return frozenset(found)


def _rules() -> tuple[Rule, ...]:
    f = Fault
    return (
        # This package's own errors.
        Rule(ours.ConfigError, f.CONFIG, "config", why="bad settings or arguments"),
        Rule(ours.MissingTopicError, f.CONFIG, "topic_missing", why="a configured topic"),
        Rule(ours.DocumentRejectedError, f.DOCUMENT, "store_rejected", why="refused by MongoDB"),
        Rule(ours.BadDocumentError, f.DOCUMENT, "bad_document", why="unusable document"),
        Rule(ours.DocumentError, f.DOCUMENT, "bad_document", why="unusable document"),
        Rule(ours.InputError, f.INPUT, "invalid_input", why="the input itself is bad"),
        Rule(ours.WriteConflictError, f.CONTENDED, "write_conflict", why="a hot document"),
        Rule(ours.TransientError, f.UNAVAILABLE, "unavailable", why="a dependency is away"),
        Rule(ours.StoreRefusedError, f.STORE_REFUSED, "store_refused", why="MongoDB refuses us"),
        Rule(
            ours.RecordRejectedError,
            f.RECORD_REFUSED,
            "record_refused",
            why="our producer refused the record itself (over max_request_size)",
        ),
        Rule(
            ours.PublishRejectedError,
            f.OUTPUT_REFUSED,
            "output_refused",
            why="a topic refuses us (denied, gone, its max.message.bytes too small)",
        ),
        # PyMongo and BSON, by class, labels and server code.
        Rule(mongo.ConnectionFailure, f.UNAVAILABLE, "unavailable", why="no connection"),
        Rule(mongo.ExecutionTimeout, f.UNAVAILABLE, "unavailable", why="server time limit"),
        Rule(mongo.WTimeoutError, f.UNAVAILABLE, "unavailable", why="replication lagging"),
        Rule(
            mongo.PyMongoError,
            f.UNAVAILABLE,
            "unavailable",
            labels=STORE_TRANSIENT_LABELS,
            why="labelled retryable by the server",
        ),
        Rule(
            mongo.OperationFailure,
            f.UNAVAILABLE,
            "unavailable",
            codes=STORE_TRANSIENT_CODES,
            why="electing, stepping down, overloaded",
        ),
        Rule(
            mongo.OperationFailure,
            f.STORE_REFUSED,
            "store_refused",
            codes=STORE_REFUSED_CODES,
            why="not authenticated or authorized",
        ),
        Rule(
            mongo.OperationFailure,
            f.CONFIG,
            "index_conflict",
            codes=INDEX_CONFLICT_CODES,
            why="an existing index contradicts ours",
        ),
        Rule(
            mongo.OperationFailure,
            f.DOCUMENT,
            "store_rejected",
            codes=DOCUMENT_CODES,
            why="a document the server refuses for good",
        ),
        Rule(mongo.WriteError, f.DOCUMENT, "store_rejected", why="any other per-document error"),
        Rule(
            mongo.BulkWriteError,
            f.DOCUMENT,
            "store_rejected",
            when=_refused_documents,
            why="a bulk whose documents were refused (per operation: classify_write_error)",
        ),
        Rule(mongo.DocumentTooLarge, f.DOCUMENT, "store_rejected", why="over 16 MB"),
        Rule(BSONError, f.DOCUMENT, "store_rejected", why="a value BSON cannot hold"),
        Rule(mongo.ConfigurationError, f.CONFIG, "config", why="bad URI or options"),
        Rule(mongo.OperationFailure, f.UNAVAILABLE, "unavailable", why="other server errors"),
        # aiokafka, by class.
        Rule(kafka.KafkaConnectionError, f.UNAVAILABLE, "unavailable", why="no connection"),
        Rule(kafka.KafkaTimeoutError, f.UNAVAILABLE, "unavailable", why="no answer in time"),
        Rule(kafka.NodeNotReadyError, f.UNAVAILABLE, "unavailable", why="broker starting"),
        Rule(
            KAFKA_PRODUCER_STATE_ERRORS,
            f.UNAVAILABLE,
            "producer_reset",
            why="the producer's sequence broke: it is made anew, then retried",
        ),
        Rule(kafka.UnknownTopicOrPartitionError, f.OUTPUT_REFUSED, "topic_missing", why="gone"),
        Rule(KAFKA_RECORD_ERRORS, f.RECORD_REFUSED, "record_refused", why="too large, invalid"),
        Rule(KAFKA_REFUSALS, f.OUTPUT_REFUSED, "output_refused", why="denied, invalid topic"),
        Rule(kafka.KafkaError, f.UNAVAILABLE, "unavailable", why="leader moves and the rest"),
    )


RULES: tuple[Rule, ...] = _rules()
"""The first matching row decides; the last rows of each family are its fallbacks."""

_R, _D, _S, _A, _P, _X, _C = (
    Action.RETRY,
    Action.DEAD_LETTER,
    Action.SKIP_USER,
    Action.SET_ASIDE,
    Action.PAUSE,
    Action.REFUSE_TO_START,
    Action.STOP,
)
_COLUMNS = (
    Path.INPUT,
    Path.SWEEP_USER,
    Path.OUTBOX_ENTRY,
    Path.BACKGROUND,
    Path.START,
    Path.COMMAND,
)
_TABLE: dict[Fault, tuple[Action, ...]] = {
    #                      input sweep_user entry background start command
    Fault.UNAVAILABLE: (_R, _R, _R, _R, _R, _R),
    Fault.CONTENDED: (_R, _S, _R, _R, _R, _R),
    Fault.INPUT: (_D, _S, _A, _R, _X, _C),
    Fault.DOCUMENT: (_D, _S, _A, _R, _X, _C),
    Fault.RECORD_REFUSED: (_P, _P, _A, _P, _X, _C),
    Fault.OUTPUT_REFUSED: (_P, _P, _P, _P, _X, _C),
    # At start, credentials refused are waited out, not ready, as Kafka's are (aiokafka
    # reports a SASL refusal as a connection failure): a pod in a crash loop would hide them.
    Fault.STORE_REFUSED: (_P, _P, _P, _P, _R, _C),
    Fault.CONFIG: (_P, _P, _P, _P, _X, _X),
    Fault.BUG: (_D, _S, _A, _R, _X, _C),
}
ACTIONS: dict[Fault, dict[Path, Action]] = {
    fault: dict(zip(_COLUMNS, row, strict=True)) for fault, row in _TABLE.items()
}
"""What each path does about each fault."""


def classify(exc: BaseException) -> Verdict:
    """The :class:`Verdict` on ``exc``: the first rule of :data:`RULES` it matches."""
    code = server_code(exc)
    labels = _labels(exc)
    for rule in RULES:
        if rule.matches(exc, code, labels):
            reason = rule.reason
            if rule.fault is Fault.INPUT and isinstance(exc, ours.InputError):
                reason = exc.reason  # the input error's own dead-letter reason
            return Verdict(rule.fault, reason, code)
    return Verdict(Fault.BUG, "internal_error", code)


def classify_write_error(code: int | None, labels: Iterable[str] = ()) -> Fault:
    """The fault of one operation's error in a bulk write (``writeErrors[i]``), where no
    exception exists per operation: the same rows as :func:`classify` for a ``WriteError``."""
    probe = mongo.WriteError("", code, {"errorLabels": list(labels)})
    return classify(probe).fault


def decide(exc: BaseException, path: Path) -> Decision:
    """The action ``path`` takes about ``exc``, with the verdict it follows from."""
    verdict = classify(exc)
    return Decision(ACTIONS[verdict.fault][path], verdict)


def render_markdown() -> str:
    """Both tables as Markdown, for ``docs/reliability.md`` (kept in step by a test)."""
    lines = [
        "| failure (first matching row decides) | server codes / labels | fault | reason |",
        "|---|---|---|---|",
    ]
    for rule in RULES:
        kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
        names = ", ".join(f"`{k.__module__}.{k.__name__}`" for k in kinds)
        qualifiers = ", ".join(str(c) for c in sorted(rule.codes)) or ", ".join(sorted(rule.labels))
        if rule.when is not None:
            qualifiers = (qualifiers + " " if qualifiers else "") + "(per-document errors only)"
        lines.append(f"| {names}: {rule.why} | {qualifiers} | {rule.fault} | `{rule.reason}` |")
    lines.append("| anything else | | bug | `internal_error` |")
    lines += ["", "| fault | " + " | ".join(str(p) for p in _COLUMNS) + " |"]
    lines.append("|---" * (len(_COLUMNS) + 1) + "|")
    for fault, row in ACTIONS.items():
        lines.append(f"| {fault} | " + " | ".join(str(row[p]) for p in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"
