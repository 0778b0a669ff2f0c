"""Runs the CRUD unified-format files against one server: entities, initial data, the
operations and their expected results or errors, the command events a client observed,
and the collections' contents afterwards. Each test passes, fails (with where it
differed) or is skipped with a reason (a requirement the server does not meet, or
something this interpreter does not do)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import MongoClient, monitoring
from pymongo.errors import OperationFailure, PyMongoError

from tests.store.spec.match import MISSING, Unsupported, mismatch
from tests.store.spec.operations import error_result, run_operation

Document = dict[str, Any]
# The operations the service sends (consumer/adapters: find, find_one, update_one,
# update_many, insert_one, insert_many, replace_one, delete_many, create_index, and
# bulk_write of UpdateOne requests only): a failure of a specification test made only of
# these fails tests/store/test_crud_spec.py.
SERVICE_OPERATIONS = frozenset(
    {
        "find",
        "findOne",
        "updateOne",
        "updateMany",
        "insertOne",
        "insertMany",
        "replaceOne",
        "deleteMany",
        "createIndex",
    }
)
SERVICE_BULK_REQUESTS = frozenset({"updateOne"})
# Features the service never uses and the local store does not support (docs/local-services.md)
UNSUPPORTED_ARGUMENTS = {
    "arrayFilters": "arrayFilters",
    "collation": "collation",
    "let": "let",
}
IGNORED_COMMANDS = {"hello", "ismaster", "isMaster", "saslStart", "saslContinue", "killCursors"}


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    file: str
    test: str
    status: str  # passed, failed, skipped
    reason: str  # why it failed or was skipped
    service: bool  # only operations the service uses


class _Events(monitoring.CommandListener):
    def __init__(self, observe: Iterable[str], ignore: Iterable[str]) -> None:
        self.observe = set(observe)
        self.ignore = set(ignore) | IGNORED_COMMANDS
        self.events: list[Document] = []

    def _add(self, kind: str, event: Any, body: Document) -> None:
        if kind in self.observe and event.command_name not in self.ignore:
            self.events.append({kind: {"commandName": event.command_name, **body}})

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        body = {"command": dict(event.command), "databaseName": event.database_name}
        self._add("commandStartedEvent", event, body)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._add("commandSucceededEvent", event, {"reply": dict(event.reply)})

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._add("commandFailedEvent", event, {})


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


class Server:
    """What the requirements are checked against."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        client: MongoClient[Document]
        with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
            self.version = _version(client.admin.command("buildInfo")["version"])
            hello = client.admin.command("hello")
        self.topology = (
            "replicaset"
            if "setName" in hello
            else ("sharded" if hello.get("msg") == "isdbgrid" else "single")
        )

    def unmet(self, requirements: list[Document]) -> str | None:
        """None if any requirement is met, else the reason none is."""
        reasons = [self._unmet_one(r) for r in requirements]
        return None if not reasons or None in reasons else str(reasons[0])

    def _unmet_one(self, req: Document) -> str | None:
        if "minServerVersion" in req and self.version < _version(req["minServerVersion"]):
            return "server version"
        if "maxServerVersion" in req and self.version > _version(req["maxServerVersion"]):
            return "server version"
        if req.get("topologies") and self.topology not in req["topologies"]:
            return "topology"
        if req.get("serverless") == "require":
            return "serverless"
        for key in ("auth", "csfle", "serverParameters"):
            if key in req:
                return key
        return None


def _uses_service_operations_only(test: Document) -> bool:
    for op in test["operations"]:
        name = op["name"]
        if name == "bulkWrite":
            kinds = {next(iter(r)) for r in op["arguments"]["requests"]}
            if not kinds <= SERVICE_BULK_REQUESTS:
                return False
        elif name not in SERVICE_OPERATIONS:
            return False
    return True


def _unsupported_feature(test: Document) -> str | None:  # noqa: PLR0911 - one per feature
    """The reason to skip a test that uses a feature the service does not (documented)."""
    for op in test["operations"]:
        name, args = op["name"], op.get("arguments", {})
        if name in ("failPoint", "clientBulkWrite"):
            return str(name)
        if name.startswith("findOneAnd") and "projection" in args:
            return "findAndModify projection"
        if name == "aggregate" and any("$out" in s or "$merge" in s for s in args["pipeline"]):
            return "$out/$merge"
        if name == "aggregate" and op["object"].startswith("database"):
            return "database aggregate"
        if not isinstance(args.get("comment", ""), str):
            return "non-string comment"
        requests = [next(iter(r.values())) for r in args.get("requests", [])]
        for each in (args, *requests):
            for name, reason in UNSUPPORTED_ARGUMENTS.items():
                if name in each:
                    return reason
            if isinstance(each.get("update"), list):
                return "pipeline update"
    return None


class FileRun:
    """One specification file: its entities are made anew for each test."""

    def __init__(self, server: Server, path: Path) -> None:
        self.server = server
        self.path = path
        self.spec: Document = json_util.loads(path.read_text())

    def run(self) -> list[Outcome]:
        file_unmet = self.server.unmet(self.spec.get("runOnRequirements", []))
        return [self._run_test(test, file_unmet) for test in self.spec["tests"]]

    def _outcome(self, test: Document, status: str, reason: str) -> Outcome:
        return Outcome(
            self.path.name,
            test["description"],
            status,
            reason,
            _uses_service_operations_only(test),
        )

    def _run_test(self, test: Document, file_unmet: str | None) -> Outcome:
        reason = (
            file_unmet
            or self.server.unmet(test.get("runOnRequirements", []))
            or ("skipReason" if "skipReason" in test else None)
            or ("dots and dollars in keys" if "dots_and_dollars" in self.path.name else None)
            or _unsupported_feature(test)
        )
        if reason:
            return self._outcome(test, "skipped", reason)
        clients: list[MongoClient[Document]] = []
        try:
            failure = self._execute(test, clients)
        except Unsupported as unsupported:
            return self._outcome(test, "skipped", str(unsupported))
        finally:
            for client in clients:
                client.close()
        return self._outcome(test, "failed" if failure else "passed", failure or "")

    def _entities(
        self, clients: list[MongoClient[Document]]
    ) -> tuple[dict[str, Any], dict[str, _Events]]:
        entities: dict[str, Any] = {}
        listeners: dict[str, _Events] = {}
        for entity in self.spec.get("createEntities", []):
            ((kind, spec),) = entity.items()
            if kind == "client":
                listener = _Events(
                    spec.get("observeEvents", []), spec.get("ignoreCommandMonitoringEvents", [])
                )
                options = dict(spec.get("uriOptions", {}))
                client: MongoClient[Document] = MongoClient(
                    self.server.uri, event_listeners=[listener], **options
                )
                clients.append(client)
                entities[spec["id"]] = client
                listeners[spec["id"]] = listener
            elif kind == "database":
                if spec.get("databaseOptions"):
                    raise Unsupported("databaseOptions")
                entities[spec["id"]] = entities[spec["client"]][spec["databaseName"]]
            elif kind == "collection":
                options = spec.get("collectionOptions") or {}
                if options.get("writeConcern", {}).get("w") == 0:
                    raise Unsupported("unacknowledged writes (w: 0)")
                if options:
                    raise Unsupported("collection read concern or preference")
                entities[spec["id"]] = entities[spec["database"]][spec["collectionName"]]
            else:
                raise Unsupported(f"entity {kind}")
        return entities, listeners

    def _initial_data(self, client: MongoClient[Document]) -> None:
        for data in self.spec.get("initialData", []):
            db = client[data["databaseName"]]
            db.drop_collection(data["collectionName"])
            if data["documents"]:
                db[data["collectionName"]].insert_many(data["documents"])
            else:
                db.create_collection(data["collectionName"])

    def _execute(self, test: Document, clients: list[MongoClient[Document]]) -> str | None:
        setup: MongoClient[Document] = MongoClient(self.server.uri)
        clients.append(setup)
        self._initial_data(setup)
        entities, listeners = self._entities(clients)
        for i, op in enumerate(test["operations"]):
            failure = self._operation(entities, op)
            if failure:
                return f"operation {i} ({op['name']}): {failure}"
        for expected in test.get("expectEvents", []):
            if expected.get("eventType", "command") != "command":
                raise Unsupported("cmap events")
            found = _events_mismatch(
                expected["events"],
                listeners[expected["client"]].events,
                ignore_extra=expected.get("ignoreExtraEvents", False),
            )
            if found:
                return found
        for data in test.get("outcome", []):
            coll = setup[data["databaseName"]][data["collectionName"]]
            docs = list(coll.find({}, sort=[("_id", 1)]))
            found = mismatch(data["documents"], docs, root=False, path="outcome")
            if found:
                return found
        return None

    def _operation(self, entities: Mapping[str, Any], op: Document) -> str | None:
        if "saveResultAsEntity" in op:
            raise Unsupported("saveResultAsEntity")
        target = entities[op["object"]]
        expect_error = op.get("expectError")
        try:
            result = run_operation(target, op["name"], op.get("arguments", {}))
        except Unsupported:
            raise
        except (PyMongoError, TypeError, ValueError) as error:
            if expect_error is None:
                return f"unexpected error {type(error).__name__}: {error}"
            return _error_mismatch(expect_error, error)
        if expect_error is not None:
            return f"expected an error, got {result!r}"
        if "expectResult" in op:
            return _result_mismatch(op["expectResult"], result)
        return None


def _result_mismatch(expected: Any, result: Any) -> str | None:
    """A result is a root-level document, or an array of them (extra fields allowed)."""
    if isinstance(expected, list) and isinstance(result, list) and len(expected) == len(result):
        for i, (e, a) in enumerate(zip(expected, result, strict=True)):
            found = mismatch(e, a, root=True, path=f"result[{i}]")
            if found:
                return found
        return None
    return mismatch(expected, result, root=True, path="result")


def _events_mismatch(
    expected: list[Document], actual: list[Document], *, ignore_extra: bool
) -> str | None:
    """Each event's command or reply is a root-level document (extra fields allowed)."""
    if len(actual) < len(expected) or (len(actual) > len(expected) and not ignore_extra):
        names = [next(iter(a.values()))["commandName"] for a in actual]
        return f"events: expected {len(expected)}, got {names}"
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        ((kind, body),) = want.items()
        if kind not in got:
            return f"events[{i}]: expected {kind}, got {list(got)}"
        for key, value in body.items():
            root = key in ("command", "reply")
            found = mismatch(
                value, got[kind].get(key, MISSING), root=root, path=f"events[{i}].{key}"
            )
            if found:
                return found
    return None


def _error_mismatch(expected: Document, error: Exception) -> str | None:  # noqa: PLR0911
    server_error = isinstance(error, OperationFailure)
    if "isClientError" in expected and expected["isClientError"] == server_error:
        return f"isClientError {expected['isClientError']}, got {type(error).__name__}: {error}"
    details: Document = getattr(error, "details", None) or {}
    codes = {getattr(error, "code", None)} | {e.get("code") for e in details.get("writeErrors", [])}
    if "errorCode" in expected and expected["errorCode"] not in codes:
        got = sorted(c for c in codes if c is not None)
        return f"error code {got}, expected {expected['errorCode']}"
    if "errorCodeName" in expected and details.get("codeName") != expected["errorCodeName"]:
        return f"error code name {details.get('codeName')}, expected {expected['errorCodeName']}"
    contains = expected.get("errorContains")
    if contains and contains.lower() not in str(error).lower():
        return f"error {error!s} does not contain {contains!r}"
    if "errorResponse" in expected:
        found = mismatch(expected["errorResponse"], details, root=True, path="errorResponse")
        if found:
            return found
    if "expectResult" in expected:
        partial = error_result(error)
        found = mismatch(
            expected["expectResult"],
            partial if partial is not None else MISSING,
            root=True,
            path="error result",
        )
        if found:
            return found
    for key in ("errorLabelsContain", "errorLabelsOmit", "writeErrors", "writeConcernErrors"):
        if key in expected:
            raise Unsupported(f"expectError.{key}")
    return None
