"""JSON-lines logging: one snake_case event name per call, context as fields.

Usage::

    log = get_logger(__name__)
    log.info("batch_committed", topic=tp.topic, partition=tp.partition, offset=offset)

Every line passes through :func:`consumer.redact.scrub`, so a secret that slipped into a
message or a field is replaced before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import orjson

from consumer.kafka_log_events import KafkaClientEvents
from consumer.redact import scrub

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
_secrets: tuple[str, ...] = ()
_PLACEHOLDER = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[sdrifxXeEgGa%]|\{[^}]*\}")
_EVENT_WORDS = 4


def library_event(logger_name: str, template: object) -> str:
    """A snake_case event name for a library's free-text line: the library's name and the
    first words of the message *template* (before any value is formatted in), e.g.
    ``aiokafka_heartbeat_failed_for_group``. Templates are fixed strings, so the names form a
    small set that can be searched and counted."""
    library = re.sub(r"[^a-z0-9]+", "_", logger_name.split(".", 1)[0].lower()).strip("_")
    words = re.findall(r"[a-z0-9]+", _PLACEHOLDER.sub(" ", str(template)).lower())
    return "_".join([library or "library", *words[:_EVENT_WORDS]] if words else [library, "log"])


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:  # a library's line (aiokafka, pymongo): free text is not an event name
            entry["event"] = library_event(record.name, record.msg)
            entry["message"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, _tb = record.exc_info
            entry["error_type"] = exc_type.__name__
            entry["error"] = str(exc)
            entry["stack"] = "".join(traceback.format_exception(*record.exc_info))[-4000:]
        line = orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return scrub(line, _secrets)


class EventLogger:
    """A thin structured front for :class:`logging.Logger`."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(
        self, level: int, event: str, exc_info: bool | _ExcInfo, fields: dict[str, Any]
    ) -> None:
        logger = self._logger
        if logger.isEnabledFor(level):
            # Made and handed on directly: Logger.log would walk the stack for the caller's
            # file and line (findCaller), which no line prints; a third of a line's cost.
            record = logger.makeRecord(
                logger.name,
                level,
                "",
                0,
                event,
                (),
                sys.exc_info() if exc_info is True else exc_info or None,
                extra={"fields": fields},
            )
            logger.handle(record)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, False, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, True, fields)

    def failure(self, event: str, error: BaseException, **fields: Any) -> None:
        """An error line for ``error`` caught earlier (not the one being handled now), with
        its type, message and stack as :meth:`exception` writes them."""
        self._log(logging.ERROR, event, (type(error), error, error.__traceback__), fields)


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name))


def configure(level: str, secrets: tuple[str, ...] = (), stream: TextIO | None = None) -> None:
    """Send all logging to ``stream`` (stderr) as JSON lines at ``level``."""
    global _secrets  # noqa: PLW0603 - one process-wide scrub list, set once at start
    _secrets = tuple(s for s in secrets if s)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    # A leader move or coordinator change: one structured warning, not aiokafka's free text.
    handler.addFilter(KafkaClientEvents())
    # No line prints the thread or process: the logging HOWTO's "Optimization" flags spare
    # each record the lookups.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO (aiokafka's group membership) is useful; its DEBUG is not.
    for noisy in ("aiokafka", "pymongo"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
