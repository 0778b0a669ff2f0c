"""Deterministic identifiers for output events."""

from __future__ import annotations

import uuid

# Fixed namespace so that every replica, and every re-publication after a crash, derives
# the same event_id for the same transition.
STATUS_CHANGED_NAMESPACE = uuid.UUID("5d0f4a38-7c1e-4f0b-9a55-3f8f2a9c6b11")


def status_changed_event_id(user_id: int, pass_uuid: str, to_status: str) -> str:
    """The event_id of the transition of ``pass_uuid`` of ``user_id`` into ``to_status``.

    A pass enters each status at most once (the rules are monotonic), so the triple
    identifies the transition.
    """
    return str(uuid.uuid5(STATUS_CHANGED_NAMESPACE, f"{user_id}:{pass_uuid}:{to_status}"))
