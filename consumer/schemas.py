"""Event validators compiled from ``schemas/*.json``, the single source of event shapes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

Validator = Callable[[Any], Any]

TICKET_USED = "ticket-used.v1"
TICK = "tick.v1"
PASS_STATUS_CHANGED = "pass-status-changed.v1"  # noqa: S105 - a schema name
CHECK_LOG = "check-log.v1"
DEAD_LETTER = "dead-letter.v1"


def schema_dir() -> Path:
    """``schemas/`` of the source tree, or the copy packaged inside a wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "schemas", package / "_schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("schemas/ directory not found next to the consumer package")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((schema_dir() / f"{name}.json").read_bytes())
    return data


@functools.cache
def validator(name: str) -> Validator:
    """A compiled validator; it raises ``fastjsonschema.JsonSchemaException`` and fills defaults."""
    compiled: Validator = fastjsonschema.compile(load_schema(name))
    return compiled


ValidationFailure = fastjsonschema.JsonSchemaException
