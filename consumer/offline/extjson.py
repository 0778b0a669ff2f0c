"""MongoDB Extended JSON (canonical and relaxed) without bson: a lossless pass-through.

The decision (docs/offline-check.md): documents are *not* decoded into BSON types. A
wrapper such as ``{"$oid": "..."}``, ``{"$date": {"$numberLong": "..."}}`` or
``{"$numberInt": "5"}`` stays the plain JSON object it is in the file, and is written back
as it came. Only the few values the rules read are interpreted, where they are read:
``user_id`` and ``pass_uuid`` by :func:`consumer.domain.rules.read_int` and friends, and
``expiration``/``first_use`` by :func:`consumer.domain.times.parse_instant`, which both
understand the wrappers. The one value this service writes, ``passes[i].status``, is a
string, which every Extended JSON mode writes as a plain JSON string.

So there is no type table to get wrong, no precision lost (``$numberDecimal``, int64,
``$binary``, ``$regularExpression`` ... are carried, not converted), and canonical input
stays canonical while relaxed input stays relaxed.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def loads(raw: bytes | str) -> Any:
    """Parse one JSON text; wrappers stay as they are. Raises :data:`JSONDecodeError`."""
    return orjson.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact JSON (as ``mongoexport`` writes), object keys in their original order."""
    return orjson.dumps(value)
