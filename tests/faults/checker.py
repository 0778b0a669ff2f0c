"""An independent model of what the consumer must have done, and a comparison with what it did.

Given the seeded cache documents and the input events (as they sit on the input topics,
in offset order), :func:`expected_outcome` computes, without using the consumer's rules,
the final status and ``first_use`` of every pass and the set of pass-status-changed events
that must exist. :func:`compare` then confronts it with the documents in MongoDB and with
every record of the output topic:

- **lost**: an expected event absent from the topic, or an expected change absent from
  MongoDB (a status or ``first_use`` still as seeded);
- **wrong**: an event that should not exist, an event whose content differs from the
  model's, two publications of one ``event_id`` with different content, a document whose
  status, ``first_use`` or any other field differs, a dead letter for a valid event;
- **duplicates**: the same event published again, identically (allowed: at-least-once
  publication, deduplicated by ``event_id`` downstream) — counted, not a failure;
- **rewritten**: one ``event_id`` published with different content (another
  ``detected_at`` or cause): the transition was made twice, so a write that had made it
  was undone in between — a lost update; likewise a ``first_use`` holding a later event's
  ``used_at`` (the first event's write was undone, the later one set it again), or a status
  or ``first_use`` back at its seeded value although an event proves the write that changed
  it durable (that event went out through the same update's outbox: for a status, its
  transition to that status; for ``first_use``, any event of the pass caused by one of the
  pass's ticket-used events), so another writer undid it afterwards. A failure like lost
  and wrong (the store's conditional updates are atomic: ``tests/store``), counted apart
  because it points at the write path rather than at a missing step;
- **out_of_order**: for one pass, the first publication of a status-change event coming
  after the first publication of a later one (``USING -> EXPIRED`` before
  ``USABLE -> USING``): DESIGN §5, a pass's events are published in the order of its
  transitions. A repeat of an earlier ``event_id`` after a later event is allowed
  (consumers de-duplicate by ``event_id``). Records are taken in partition order (a user's
  events share one partition, keyed by ``user_id``). A failure.

The model is only sound when the result does not depend on timing: every non-terminal
pass must expire either before the first event (expired at seed) or well after the run,
except an *expiring* pass: seeded USABLE without ``first_use``, used by ticket-used events,
and expiring during the run before a tick's ``tick_at``. It ends EXPIRED with its first
``used_at`` either way, through ``USABLE -> USING`` then ``USING -> EXPIRED`` (used before
it expired: the case the order check is for) or straight ``USABLE -> EXPIRED`` (processed
after); the published events must tell one story. :func:`expected_outcome` refuses a
scenario that breaks these rules.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from consumer import schemas
from consumer.domain.ids import status_changed_event_id
from consumer.domain.watermarks import Watermark, key_published

NON_TERMINAL = ("USABLE", "USING")
TERMINAL = ("EXPIRED", "USES_GONE")
# The order of a pass's statuses: its transitions only ever move up.
STATUS_RANK = {"USABLE": 0, "USING": 1, "EXPIRED": 2, "USES_GONE": 2}
# Fields this service may add to a user document (DESIGN §2, consumer.adapters.mongo).
SERVICE_FIELDS = frozenset(
    {
        "next_check_at",
        "pass_status_checked_at",
        "pass_status_rev",
        "pass_status_write",
        "pass_status_outbox",
        "pass_status_outbox_since",
        "pass_status_outbox_relay",
        "pass_status_outbox_rejected",
    }
)
# Fields a concurrent writer (the refresher) is allowed to change in the scenarios.
FOREIGN_FIELDS = frozenset({"timestamp"})


class AmbiguousScenarioError(ValueError):
    """The scenario's outcome would depend on timing; the model cannot predict it."""


def parse_time(text: str) -> datetime:
    """The ISO 8601 instants the scenarios write (``…Z`` or with an offset)."""
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def fmt(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class ExpectedTransition:
    event_id: str
    user_id: int
    pass_uuid: str
    from_status: str
    to_status: str
    effective_at: str
    cause_types: frozenset[str]
    cause_ids: frozenset[str]
    # Other statuses the event may come from (an expiring pass: USABLE or USING).
    other_from: frozenset[str] = frozenset()

    @property
    def status_log(self) -> str:
        return f"{self.from_status} -> {self.to_status}"


@dataclass(frozen=True, slots=True)
class ExpectedPass:
    user_id: int
    index: int
    pass_uuid: str
    seeded: Mapping[str, Any]
    status: str
    first_use: Any
    # used_at of the pass's later ticket-used events: a first_use among them means an
    # earlier write that had set it was undone by the store (see ``rewritten``).
    later_first_uses: frozenset[str] = frozenset()
    # event_id of the pass's ticket-used events: a published event of this pass caused by
    # one of them proves a write that applied it (and so left first_use set) was durable.
    ticket_used_ids: frozenset[str] = frozenset()


@dataclass(slots=True)
class Expected:
    passes: list[ExpectedPass] = field(default_factory=list)
    transitions: dict[str, ExpectedTransition] = field(default_factory=dict)
    seeds: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    # Events that may exist: USABLE -> USING of an expiring pass (used before it expired).
    optional: dict[str, ExpectedTransition] = field(default_factory=dict)
    # (USABLE -> USING, -> EXPIRED) event ids of each expiring pass: one story or the other.
    chains: list[tuple[str, str]] = field(default_factory=list)


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def expected_outcome(
    seeds: Iterable[Mapping[str, Any]],
    ticket_used: Sequence[Mapping[str, Any]],
    ticks: Sequence[Mapping[str, Any]],
    *,
    seeded_at: datetime,
    last_event_at: datetime,
    margin: timedelta = timedelta(hours=1),
) -> Expected:
    """The final state the consumer must reach once every input event is processed.

    ``ticket_used`` must be in offset order per user (as read from the topic). ``seeded_at``
    is when the documents were inserted (before the first event); ``last_event_at`` when
    the last event was processed at the latest. Valid events only: every ticket-used names
    a known user and pass, every tick is processable.
    """
    by_pass: dict[tuple[int, str], list[Mapping[str, Any]]] = defaultdict(list)
    users_with_events: dict[int, set[str]] = defaultdict(set)
    for event in ticket_used:
        by_pass[(int(event["user_id"]), str(event["pass_uuid"]))].append(event)
        users_with_events[int(event["user_id"])].add(str(event["event_id"]))
    sweeping_ticks = [t for t in ticks if t.get("apply", True)]
    out = Expected()
    for seed in seeds:
        user_id = int(seed["user_id"])
        out.seeds[user_id] = seed
        known = {str(p["pass_uuid"]) for p in seed["passes"]}
        for uid, pass_uuid in by_pass:
            if uid == user_id and pass_uuid not in known:
                raise AmbiguousScenarioError(f"event for unknown pass {pass_uuid} of {uid}")
        for index, item in enumerate(seed["passes"]):
            _expect_pass(
                out,
                user_id,
                index,
                item,
                by_pass.get((user_id, str(item["pass_uuid"])), []),
                users_with_events.get(user_id, set()),
                sweeping_ticks,
                seeded_at,
                last_event_at + margin,
            )
    return out


def _expect_pass(
    out: Expected,
    user_id: int,
    index: int,
    item: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    user_event_ids: set[str],
    ticks: Sequence[Mapping[str, Any]],
    seeded_at: datetime,
    safe_after: datetime,
) -> None:
    pass_uuid = str(item["pass_uuid"])
    status = str(item["status"])
    payload = item["payload"]
    first_use = payload.get("first_use")
    if not _present(first_use) and events:
        first_use = events[0]["used_at"]  # the first ticket-used in offset order wins
    final, transition = status, None
    if status in NON_TERMINAL:
        expiration = parse_time(payload["expiration"])
        if seeded_at < expiration <= safe_after:
            _expect_expiring(out, user_id, index, item, events, user_event_ids, ticks, expiration)
            return
        expired = expiration <= seeded_at
        tick_ids = {
            str(t["event_id"])
            for t in ticks
            if t.get("user_id") in (None, 0, user_id) and parse_time(t["tick_at"]) >= expiration
        }
        if expired and (user_event_ids or tick_ids):
            final = "EXPIRED"
            transition = ExpectedTransition(
                event_id=status_changed_event_id(user_id, pass_uuid, final),
                user_id=user_id,
                pass_uuid=pass_uuid,
                from_status=status,
                to_status=final,
                effective_at=fmt(expiration),
                cause_types=frozenset({"tick", "ticket_used"}),
                cause_ids=frozenset(user_event_ids | tick_ids),
            )
        elif not expired and status == "USABLE" and _present(first_use):
            if not events:
                raise AmbiguousScenarioError(f"pass {pass_uuid} is seeded USABLE with first_use")
            final = "USING"
            transition = ExpectedTransition(
                event_id=status_changed_event_id(user_id, pass_uuid, final),
                user_id=user_id,
                pass_uuid=pass_uuid,
                from_status=status,
                to_status=final,
                effective_at=fmt(parse_time(str(first_use))),
                cause_types=frozenset({"ticket_used"}),
                cause_ids=frozenset(str(e["event_id"]) for e in events),
            )
    later = frozenset(str(e["used_at"]) for e in events[1:]) - {str(first_use)}
    own = frozenset(str(e["event_id"]) for e in events)
    out.passes.append(ExpectedPass(user_id, index, pass_uuid, item, final, first_use, later, own))
    if transition is not None:
        out.transitions[transition.event_id] = transition


def _expect_expiring(
    out: Expected,
    user_id: int,
    index: int,
    item: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    user_event_ids: set[str],
    ticks: Sequence[Mapping[str, Any]],
    expiration: datetime,
) -> None:
    """A pass expiring during the run (see the module's docstring), or a refusal."""
    pass_uuid = str(item["pass_uuid"])
    tick_ids = frozenset(
        str(t["event_id"])
        for t in ticks
        if t.get("user_id") in (None, 0, user_id) and parse_time(t["tick_at"]) >= expiration
    )
    if item["status"] != "USABLE" or _present(item["payload"].get("first_use")) or not events:
        raise AmbiguousScenarioError(f"pass {pass_uuid} expires during the run, not as planned")
    if not tick_ids:
        raise AmbiguousScenarioError(f"pass {pass_uuid} expires after the last tick")
    first_use = str(events[0]["used_at"])
    own = frozenset(str(e["event_id"]) for e in events)
    using = ExpectedTransition(
        event_id=status_changed_event_id(user_id, pass_uuid, "USING"),
        user_id=user_id,
        pass_uuid=pass_uuid,
        from_status="USABLE",
        to_status="USING",
        effective_at=fmt(parse_time(first_use)),
        cause_types=frozenset({"ticket_used"}),
        cause_ids=own,
    )
    # Any event of the user (a sweep of a tick at or after the expiration, or a ticket-used
    # processed after it) may be the one that expires it.
    user_ids = frozenset(user_event_ids)
    expired = ExpectedTransition(
        event_id=status_changed_event_id(user_id, pass_uuid, "EXPIRED"),
        user_id=user_id,
        pass_uuid=pass_uuid,
        from_status="USING",
        to_status="EXPIRED",
        effective_at=fmt(expiration),
        cause_types=frozenset({"tick", "ticket_used"}),
        cause_ids=tick_ids | user_ids,
        other_from=frozenset({"USABLE"}),
    )
    out.optional[using.event_id] = using
    out.transitions[expired.event_id] = expired
    out.chains.append((using.event_id, expired.event_id))
    later = frozenset(str(e["used_at"]) for e in events[1:]) - {first_use}
    out.passes.append(
        ExpectedPass(user_id, index, pass_uuid, item, "EXPIRED", first_use, later, own)
    )


# --------------------------------------------------------------------------- comparison


@dataclass(slots=True)
class Report:
    passes_checked: int = 0
    expected_events: int = 0
    published_records: int = 0
    distinct_published: int = 0
    duplicates: int = 0
    pending_outbox: int = 0
    dead_letters: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    # Passes whose USABLE -> USING and USING -> EXPIRED were both published: the order
    # check had something to check.
    passes_with_two_events: int = 0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.wrong and not self.rewritten and not self.out_of_order

    def figures(self) -> dict[str, int]:
        return {
            "passes_checked": self.passes_checked,
            "expected_events": self.expected_events,
            "published_records": self.published_records,
            "distinct_published": self.distinct_published,
            "duplicates": self.duplicates,
            "pending_outbox": self.pending_outbox,
            "dead_letters": self.dead_letters,
            "lost": len(self.lost),
            "wrong": len(self.wrong),
            "rewritten": len(self.rewritten),
            "out_of_order": len(self.out_of_order),
            "passes_with_two_events": self.passes_with_two_events,
        }

    def describe(self, limit: int = 25) -> str:
        lines = [f"figures: {self.figures()}"]
        lines += [f"LOST: {x}" for x in self.lost[:limit]]
        lines += [f"WRONG: {x}" for x in self.wrong[:limit]]
        lines += [f"REWRITTEN: {x}" for x in self.rewritten[:limit]]
        lines += [f"OUT OF ORDER: {x}" for x in self.out_of_order[:limit]]
        return "\n".join(lines)


def _strip_pass(item: Mapping[str, Any]) -> dict[str, Any]:
    """A pass without what may legitimately change: status, first_use, foreign fields."""
    out = {k: v for k, v in item.items() if k != "status" and k not in FOREIGN_FIELDS}
    payload = item.get("payload")
    if isinstance(payload, Mapping):
        out["payload"] = {k: v for k, v in payload.items() if k != "first_use"}
    return out


def _strip_user(doc: Mapping[str, Any]) -> dict[str, Any]:
    skip = SERVICE_FIELDS | FOREIGN_FIELDS | {"_id", "passes"}
    return {k: v for k, v in doc.items() if k not in skip}


# Per (user_id, pass_uuid): the (to_status, cause event_id) of its published status changes.
Made = Mapping[tuple[int, str], frozenset[tuple[str, str]]]


def compare_documents(
    expected: Expected,
    documents: Iterable[Mapping[str, Any]],
    made: Made | None = None,
    watermarks: Mapping[int, Watermark] | None = None,
) -> Report:
    """Compare the model with the cache documents as they are now (MongoDB).

    ``made``: the changes whose events were published, so whose writes were durable.
    """
    report = Report()
    docs = {d.get("user_id"): d for d in documents}
    by_user: dict[int, list[ExpectedPass]] = defaultdict(list)
    for item in expected.passes:
        by_user[item.user_id].append(item)
    for user_id, seed in expected.seeds.items():
        doc = docs.get(user_id)
        if doc is None:
            report.lost.append(f"user {user_id}: document missing")
            continue
        if _strip_user(doc) != _strip_user(seed):
            report.wrong.append(f"user {user_id}: top-level fields changed")
        passes = doc.get("passes")
        if not isinstance(passes, list) or len(passes) != len(seed["passes"]):
            report.wrong.append(f"user {user_id}: passes array reshaped")
            continue
        outbox = doc.get("pass_status_outbox")
        # Entries stay after their relay published them (until the next write): pending
        # are those the relay sources' saved watermarks do not cover (all, without them).
        published = watermarks is not None and key_published(
            doc.get("pass_status_outbox_relay"), watermarks
        )
        if isinstance(outbox, list) and not published:
            report.pending_outbox += len(outbox)
        for want in by_user[user_id]:
            report.passes_checked += 1
            _compare_pass(report, want, passes[want.index], made or {})
    return report


def _compare_pass(report: Report, want: ExpectedPass, got: Any, made: Made) -> None:
    where = f"user {want.user_id} pass {want.pass_uuid}"
    if not isinstance(got, Mapping) or got.get("pass_uuid") != want.pass_uuid:
        report.wrong.append(f"{where}: pass replaced or moved")
        return
    seeded_status = want.seeded["status"]
    status = got.get("status")
    made_here = made.get((want.user_id, want.pass_uuid), frozenset())
    if status != want.status:
        bucket = report.lost if status == seeded_status else report.wrong
        if status == seeded_status and any(to == want.status for to, _cause in made_here):
            bucket = report.rewritten  # the write that made it was durable, then undone
        bucket.append(f"{where}: status {status!r}, expected {want.status!r}")
    payload = got.get("payload")
    first_use = payload.get("first_use") if isinstance(payload, Mapping) else None
    if first_use != want.first_use:
        seeded_first_use = want.seeded["payload"].get("first_use")
        bucket = report.lost if first_use == seeded_first_use else report.wrong
        if first_use in want.later_first_uses:
            bucket = report.rewritten  # set by a later event: the first one's write undone
        elif first_use == seeded_first_use and any(
            cause in want.ticket_used_ids for _to, cause in made_here
        ):
            bucket = report.rewritten  # the write that set it was durable, then undone
        bucket.append(f"{where}: first_use {first_use!r}, expected {want.first_use!r}")
    if _strip_pass(got) != _strip_pass(want.seeded):
        report.wrong.append(f"{where}: a field other than status/first_use changed")


def compare_events(
    expected: Expected,
    published: Sequence[bytes],
    report: Report | None = None,
    *,
    dead_letters: Sequence[bytes] = (),
) -> Report:
    """Compare the model with every record value of the status-changed topic, in
    partition order (as read; a user's records share one partition)."""
    report = report or Report()
    report.expected_events = len(expected.transitions)
    report.published_records = len(published)
    report.dead_letters = len(dead_letters)
    for raw in dead_letters:
        body = orjson.loads(raw)
        report.wrong.append(
            f"dead letter for a valid event: {body.get('reason')}: {body.get('message')}"
        )
    validate = schemas.validator(schemas.PASS_STATUS_CHANGED)
    seen: dict[str, bytes] = {}
    counts: Counter[str] = Counter()
    for raw in published:
        try:
            event = orjson.loads(raw)
            validate(event)
        except (orjson.JSONDecodeError, schemas.ValidationFailure) as exc:
            report.wrong.append(f"unreadable or invalid output event: {exc}: {raw[:200]!r}")
            continue
        event_id = str(event["event_id"])
        counts[event_id] += 1
        if event_id in seen:
            first = orjson.loads(seen[event_id])
            if first != event:
                diff = {k: (first.get(k), event.get(k)) for k in event if first.get(k) != event[k]}
                report.rewritten.append(f"event {event_id} published twice, differing: {diff}")
            continue
        seen[event_id] = raw
        want = expected.transitions.get(event_id) or expected.optional.get(event_id)
        if want is None:
            report.wrong.append(f"unexpected transition: {event}")
            continue
        problems = _event_problems(want, event)
        if problems:
            report.wrong.append(f"event {event_id} ({want.status_log}): {'; '.join(problems)}")
    report.distinct_published = len(counts)
    report.duplicates = sum(n - 1 for n in counts.values())
    report.out_of_order.extend(out_of_order(published))
    _check_chains(expected, seen, report)
    report.lost.extend(
        f"event {t.event_id} never published: user {t.user_id} pass {t.pass_uuid} {t.status_log}"
        for t in expected.transitions.values()
        if t.event_id not in counts
    )
    return report


def out_of_order(published: Sequence[bytes]) -> list[str]:
    """Passes whose events were first published against the order of their transitions.

    For each pass, the first publication of each ``event_id`` must not go down in status
    (USABLE < USING < EXPIRED, USES_GONE); a repeat of an ``event_id`` already seen is
    skipped, wherever it comes (a re-publication, de-duplicated downstream).
    """
    seen: set[str] = set()
    highest: dict[tuple[Any, Any], tuple[int, str]] = {}
    found: list[str] = []
    for raw in published:
        try:
            event = orjson.loads(raw)
            event_id, rank = str(event["event_id"]), STATUS_RANK[str(event["to_status"])]
            key = (event["user_id"], event["pass_uuid"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # unreadable: compare_events reports it
        if event_id in seen:
            continue
        seen.add(event_id)
        before = highest.get(key)
        if before is not None and rank < before[0]:
            found.append(
                f"user {key[0]} pass {key[1]}: {event.get('status_log')} first published "
                f"after {before[1]}"
            )
        if before is None or rank > before[0]:
            highest[key] = (rank, str(event.get("status_log")))
    return found


def _check_chains(expected: Expected, seen: Mapping[str, bytes], report: Report) -> None:
    """An expiring pass's events tell one story: USABLE -> USING then USING -> EXPIRED, or
    USABLE -> EXPIRED alone."""
    for using_id, expired_id in expected.chains:
        if expired_id not in seen:
            continue  # reported lost
        expired = orjson.loads(seen[expired_id])
        want = expected.transitions[expired_id]
        where = f"user {want.user_id} pass {want.pass_uuid}"
        if expired.get("from_status") == "USING":
            if using_id in seen:
                report.passes_with_two_events += 1
            else:
                report.lost.append(f"{where}: USING -> EXPIRED without USABLE -> USING")
        elif using_id in seen:
            report.wrong.append(f"{where}: USABLE -> USING, then {expired.get('status_log')}")


def _event_problems(want: ExpectedTransition, event: Mapping[str, Any]) -> list[str]:
    from_status = event.get("from_status")
    if from_status not in want.other_from:
        from_status = want.from_status
    problems = [
        f"{name} {event.get(name)!r} != {value!r}"
        for name, value in (
            ("user_id", want.user_id),
            ("pass_uuid", want.pass_uuid),
            ("from_status", from_status),
            ("to_status", want.to_status),
            ("status_log", f"{from_status} -> {want.to_status}"),
            ("effective_at", want.effective_at),
        )
        if event.get(name) != value
    ]
    cause = event.get("cause") or {}
    if cause.get("type") not in want.cause_types:
        problems.append(f"cause type {cause.get('type')!r} not in {sorted(want.cause_types)}")
    if cause.get("event_id") not in want.cause_ids:
        problems.append(f"cause event {cause.get('event_id')!r} is not a possible cause")
    return problems


def check(
    expected: Expected,
    documents: Iterable[Mapping[str, Any]],
    published: Sequence[bytes],
    dead_letters: Sequence[bytes] = (),
    watermarks: Mapping[int, Watermark] | None = None,
) -> Report:
    """Both comparisons in one report."""
    report = compare_documents(expected, documents, _made(published), watermarks)
    return compare_events(expected, published, report, dead_letters=dead_letters)


def _made(published: Sequence[bytes]) -> Made:
    """The changes that published events prove were written (unreadable records skipped:
    :func:`compare_events` reports them)."""
    made: defaultdict[tuple[int, str], set[tuple[str, str]]] = defaultdict(set)
    for raw in published:
        try:
            event = orjson.loads(raw)
            key = (int(event["user_id"]), str(event["pass_uuid"]))
            made[key].add((str(event["to_status"]), str(event["cause"]["event_id"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return {key: frozenset(changes) for key, changes in made.items()}
