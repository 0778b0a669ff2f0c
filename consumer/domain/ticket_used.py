"""Applying a ticket-used event to a cache document: record the pass's ``first_use``.

DESIGN §2: ``passes[i].payload.first_use`` is set only when it is absent, null or a blank
string; a value already there (even one that does not parse) is the refresher's and wins.
The status change itself is left to :func:`consumer.domain.rules.evaluate_user`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumer.domain.rules import first_use_present
from consumer.domain.times import quote
from consumer.errors import UnknownPassError


@dataclass(frozen=True, slots=True)
class FirstUseSet:
    """``first_use`` was recorded on ``passes[index]``."""

    index: int
    pass_uuid: str
    first_use: str


def apply_ticket_used(
    doc: Mapping[str, Any], pass_uuid: str, used_at: str
) -> tuple[dict[str, Any], FirstUseSet | None]:
    """The document with ``first_use`` of ``pass_uuid`` set to ``used_at`` if it had none.

    Returns the new document (``doc`` is never mutated; only the changed pass and its payload
    are copied) and what was set, or ``None`` when nothing changed. The first pass with that
    ``pass_uuid`` is the one used, as in the rules, which skip later duplicates.

    Raises :class:`UnknownPassError` when no pass has that ``pass_uuid``. A pass whose
    ``payload`` is not an object is left unchanged (``None``): the rules report it in
    ``skipped_list`` ("missing payload"), so the event is not lost from view.
    """
    passes = doc.get("passes")
    items = passes if isinstance(passes, list) else []
    index = next(
        (
            i
            for i, item in enumerate(items)
            if isinstance(item, Mapping) and item.get("pass_uuid") == pass_uuid
        ),
        None,
    )
    if index is None:
        raise UnknownPassError(
            f"user {quote(doc.get('user_id'))} has no pass with pass_uuid {quote(pass_uuid)}"
        )
    updated = dict(doc)
    found: Mapping[str, Any] = items[index]
    payload = found.get("payload")
    if not isinstance(payload, Mapping) or first_use_present(payload.get("first_use")):
        return updated, None
    new_payload = dict(payload)
    new_payload["first_use"] = used_at
    new_pass = dict(found)
    new_pass["payload"] = new_payload
    new_passes = list(items)
    new_passes[index] = new_pass
    updated["passes"] = new_passes
    return updated, FirstUseSet(index=index, pass_uuid=pass_uuid, first_use=used_at)
