"""The status rules of DESIGN §3: which passes of a user change status at an instant ``now``.

Pure and deterministic: the same document and ``now`` always give the same evaluation.
Documents are read as they come (a pymongo ``dict`` or parsed Extended JSON): values the
rules need are read through helpers that also understand Extended JSON wrappers
(``{"$date": ...}``, ``{"$numberInt": ...}``, ``{"$numberLong": ...}``).

Leniency, chosen so that one bad pass never hides the others:

- ``passes`` missing or ``null``: the user holds no passes; nothing to report.
- ``passes`` of another type: no transitions, one :class:`SkippedPass` at index ``-1``.
- a bad pass (not an object, unknown status, no ``pass_uuid``, no payload, missing or
  unreadable ``expiration``, a ``pass_uuid`` seen earlier in the array) is reported in
  ``skipped`` and left as it is. Terminal passes are never reported, even when malformed.
- ``user_id`` missing or not an integer (an integral double counts as one) is the one
  fatal case: :class:`DocumentError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from consumer.domain.times import as_utc, parse_instant, quote
from consumer.errors import DocumentError, UnreadableTimeError

if TYPE_CHECKING:
    from datetime import datetime


class PassStatus(StrEnum):
    USABLE = "USABLE"
    USING = "USING"
    EXPIRED = "EXPIRED"
    USES_GONE = "USES_GONE"


TERMINAL_STATUSES: frozenset[str] = frozenset({PassStatus.EXPIRED, PassStatus.USES_GONE})

# The order passes move in; a transition always goes up this ranking (monotonic rules).
STATUS_RANK: Mapping[str, int] = {
    PassStatus.USABLE: 0,
    PassStatus.USING: 1,
    PassStatus.EXPIRED: 2,
    PassStatus.USES_GONE: 2,
}

_INT_WRAPPERS = ("$numberInt", "$numberLong")
# Mapping checks are written ``dict | Mapping``: the plain dict test comes first and is much
# cheaper than the ABC check, and documents are almost always dicts.


@dataclass(frozen=True, slots=True)
class Transition:
    """One pass changing status. ``index`` is its position in ``passes``."""

    index: int
    pass_uuid: str
    from_status: str
    to_status: str
    status_log: str
    effective_at: datetime


@dataclass(frozen=True, slots=True)
class SkippedPass:
    """A pass the rules could not evaluate and left as it is; ``reason`` quotes bad values."""

    index: int
    pass_uuid: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class UserEvaluation:
    """The outcome of evaluating one user's passes at ``now``.

    ``next_check_at`` is the earliest expiration after ``now`` among the passes still
    non-terminal after the transitions (USABLE or USING, evaluated, not skipped), or ``None``.
    """

    user_id: int
    now: datetime
    transitions: tuple[Transition, ...]
    skipped: tuple[SkippedPass, ...]
    next_check_at: datetime | None


def read_int(value: object) -> int | None:
    """``value`` as an integer if it is one: plain, ``$numberInt``/``$numberLong``, or an
    integral, finite double (plain or ``$numberDouble``: the Node.js driver stores every
    number as a double, so ``42.0`` is user 42 wherever a ``user_id`` is read)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict | Mapping) and len(value) == 1:
        for key in _INT_WRAPPERS:
            text = value.get(key)
            if isinstance(text, str):
                try:
                    return int(text)
                except ValueError:
                    return None
    return _integral_double(value)


def _integral_double(value: object) -> int | None:
    """An integral, finite double (plain or ``$numberDouble``) as an int, else ``None``."""
    if isinstance(value, dict | Mapping) and len(value) == 1:
        text = value.get("$numberDouble")
        if not isinstance(text, str):
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def read_user_id(doc: Mapping[str, Any]) -> int:
    """The document's ``user_id`` (:func:`read_int`); raises :class:`DocumentError` when
    unusable."""
    if "user_id" not in doc:
        raise DocumentError("user_id is missing")
    user_id = read_int(doc["user_id"])
    if user_id is None:
        raise DocumentError(f"user_id is not an integer: {quote(doc['user_id'])}")
    return user_id


def first_use_present(value: object) -> bool:
    """DESIGN §3: present when not null and not an empty or blank string; need not parse."""
    if value is None:
        return False
    return not (isinstance(value, str) and not value.strip())


@dataclass(frozen=True, slots=True)
class _PassOutcome:
    transition: Transition | None = None
    skipped: SkippedPass | None = None
    # The expiration to wait for when the pass stays non-terminal after this evaluation.
    pending_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class _EvaluablePass:
    pass_uuid: str
    status: str
    payload: Mapping[str, Any]


def _screen_pass(index: int, item: object, seen: set[str]) -> _PassOutcome | _EvaluablePass:
    """The pass's fields if the rules can evaluate it, else its (possibly empty) outcome."""
    if not isinstance(item, dict | Mapping):
        return _PassOutcome(skipped=SkippedPass(index, None, "pass is not an object"))
    raw_uuid = item.get("pass_uuid")
    pass_uuid = raw_uuid if isinstance(raw_uuid, str) and raw_uuid else None
    raw_status = item.get("status")
    status = raw_status if isinstance(raw_status, str) else None
    duplicate = pass_uuid is not None and pass_uuid in seen
    if pass_uuid is not None:
        seen.add(pass_uuid)
    if status in TERMINAL_STATUSES:
        return _PassOutcome()  # terminal: never changes, never reported
    payload = item.get("payload")
    reason = None
    if "status" not in item:
        reason = "missing status"
    elif status not in STATUS_RANK:
        reason = f"unknown status {quote(raw_status)}"
    elif raw_uuid is None:
        reason = "missing pass_uuid"
    elif pass_uuid is None:
        reason = f"pass_uuid is not a non-empty string: {quote(raw_uuid)}"
    elif duplicate:
        reason = f"duplicate pass_uuid {quote(pass_uuid)}"
    elif payload is None:
        reason = "missing payload"
    elif not isinstance(payload, dict | Mapping):
        reason = f"payload is not an object: {quote(payload)}"
    if (
        reason is not None
        or pass_uuid is None
        or status is None
        or not isinstance(payload, dict | Mapping)
    ):
        return _PassOutcome(skipped=SkippedPass(index, pass_uuid, reason or "unreadable pass"))
    return _EvaluablePass(pass_uuid, status, payload)


def _evaluate_pass(index: int, item: object, now: datetime, seen: set[str]) -> _PassOutcome:
    screened = _screen_pass(index, item, seen)
    if isinstance(screened, _PassOutcome):
        return screened
    pass_uuid, status, payload = screened.pass_uuid, screened.status, screened.payload
    raw_expiration = payload.get("expiration")
    if raw_expiration is None:
        return _PassOutcome(skipped=SkippedPass(index, pass_uuid, "missing expiration"))
    try:
        expiration = parse_instant(raw_expiration)
    except UnreadableTimeError:
        reason = f"unreadable expiration {quote(raw_expiration)}"
        return _PassOutcome(skipped=SkippedPass(index, pass_uuid, reason))

    if now >= expiration:
        to_status, effective_at = PassStatus.EXPIRED.value, expiration
    elif status == PassStatus.USABLE and first_use_present(payload.get("first_use")):
        to_status, effective_at = PassStatus.USING.value, _first_use_instant(payload, now)
    else:
        return _PassOutcome(pending_until=expiration)
    transition = Transition(
        index=index,
        pass_uuid=pass_uuid,
        from_status=status,
        to_status=to_status,
        status_log=f"{status} -> {to_status}",
        effective_at=effective_at,
    )
    pending = expiration if to_status not in TERMINAL_STATUSES else None
    return _PassOutcome(transition=transition, pending_until=pending)


def _first_use_instant(payload: Mapping[str, Any], now: datetime) -> datetime:
    # first_use need not parse (DESIGN §3); when it does not, the change is dated now.
    try:
        return parse_instant(payload.get("first_use"))
    except UnreadableTimeError:
        return now


def evaluate_user(doc: Mapping[str, Any], now: datetime) -> UserEvaluation:
    """Evaluate every pass of the cache document ``doc`` at ``now`` (naive means UTC)."""
    if not isinstance(doc, dict | Mapping):
        raise DocumentError(f"document is not an object: {quote(doc)}")
    user_id = read_user_id(doc)
    now = as_utc(now)
    passes = doc.get("passes")
    if passes is None:
        return UserEvaluation(user_id, now, (), (), None)
    if not isinstance(passes, list):
        skipped = SkippedPass(-1, None, f"passes is not a list: {quote(passes)}")
        return UserEvaluation(user_id, now, (), (skipped,), None)

    transitions: list[Transition] = []
    skipped_passes: list[SkippedPass] = []
    next_check_at: datetime | None = None
    seen: set[str] = set()
    for index, item in enumerate(passes):
        outcome = _evaluate_pass(index, item, now, seen)
        if outcome.transition is not None:
            transitions.append(outcome.transition)
        if outcome.skipped is not None:
            skipped_passes.append(outcome.skipped)
        pending = outcome.pending_until
        if pending is not None and (next_check_at is None or pending < next_check_at):
            next_check_at = pending
    return UserEvaluation(user_id, now, tuple(transitions), tuple(skipped_passes), next_check_at)


def apply_transitions(doc: Mapping[str, Any], transitions: Sequence[Transition]) -> dict[str, Any]:
    """A new document with each transition's pass status changed; ``doc`` is not mutated.

    Only the changed pass objects are copied; everything else is shared with ``doc``.
    Raises :class:`DocumentError` if a transition does not match the pass at its index
    (the transitions were computed from another version of the document).
    """
    updated = dict(doc)
    if not transitions:
        return updated
    passes = doc.get("passes")
    if not isinstance(passes, list):
        raise DocumentError("cannot apply transitions: passes is not a list")
    new_passes = list(passes)
    for transition in transitions:
        index = transition.index
        current = new_passes[index] if 0 <= index < len(new_passes) else None
        if (
            not isinstance(current, dict | Mapping)
            or current.get("pass_uuid") != transition.pass_uuid
            or current.get("status") != transition.from_status
        ):
            raise DocumentError(
                f"transition {transition.status_log} of pass {quote(transition.pass_uuid)} "
                f"does not match passes[{index}]"
            )
        changed = dict(current)
        changed["status"] = transition.to_status
        new_passes[index] = changed
    updated["passes"] = new_passes
    return updated
