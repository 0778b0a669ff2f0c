"""Settings: every knob of the service, read once from ``PASS_STATUS_*`` variables.

This is the only module that reads the environment (see :meth:`Settings.from_env`).
``docs/configuration.md`` documents every variable; a unit test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.errors import ConfigError

PREFIX = "PASS_STATUS_"
# PASS_STATUS_<SECRET>_FILE names a file holding the secret setting <SECRET>.
FILE_SUFFIX = "_FILE"

# The default largest dead letter: well under the producer's request size (1 MiB) and the
# broker's default max.message.bytes (1048588), whatever framing is added to it.
DEAD_LETTER_MAX_BYTES = 900_000


def _setting(default: Any, help_text: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help_text, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings; field ``foo_bar`` is read from ``PASS_STATUS_FOO_BAR``."""

    kafka_bootstrap_servers: str = _setting(
        "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated."
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = _setting("PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = _setting("", "SASL user name (with a SASL protocol).")
    kafka_sasl_password: str = _setting("", "SASL password.", secret=True)
    kafka_ssl_cafile: str = _setting("", "CA bundle for Kafka TLS; empty uses the system store.")
    kafka_ssl_certfile: str = _setting("", "Client certificate for Kafka mutual TLS.")
    kafka_ssl_keyfile: str = _setting("", "Client key for Kafka mutual TLS.")
    mongodb_uri: str = _setting(
        "mongodb://127.0.0.1:27017", "MongoDB connection URI (may hold credentials).", secret=True
    )
    mongodb_database: str = _setting("cache", "Database holding the collections.")
    mongodb_tls_cafile: str = _setting("", "CA bundle for MongoDB TLS (turns TLS on).")
    mongodb_write_concern: str = _setting(
        "majority",
        "Write concern w: `majority` or a number of members, at least 1 (conditional writes"
        " need acknowledged writes).",
    )
    mongodb_timeout_ms: int = _setting(5000, "Server selection and socket timeout, ms.")
    mongodb_index_timeout_ms: int = _setting(
        3_600_000,
        "Longest wait for the index builds at start (the first start on a large collection"
        " builds them; the socket timeout does not apply), ms.",
    )
    collection_cache: str = _setting("bytemark_tickets_cache", "Cache collection.")
    collection_check_log: str = _setting("bytemark_cache_status_check_log", "Check-log collection.")
    group_id: str = _setting("pass-status", "Kafka consumer group.")
    client_id: str = _setting("pass-status", "Kafka client id prefix.")
    topic_ticket_used: str = _setting("bytemark.ticket-used.v1", "Input: ticket-used events.")
    topic_tick: str = _setting("bytemark.tick.v1", "Input: tick events.")
    topic_status_changed: str = _setting(
        "bytemark.pass-status-changed.v1", "Output: pass-status-changed events."
    )
    topic_check_log: str = _setting("bytemark.check-log.v1", "Output: check-log summaries.")
    topic_dead_letter: str = _setting("bytemark.dead-letter.v1", "Output: dead letters.")
    http_host: str = _setting("0.0.0.0", "Address of the metrics and health server.")  # noqa: S104 - pods must be scraped from outside
    http_port: int = _setting(8080, "Port of /metrics, /healthz and /readyz; 0 picks a free one.")
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR.")
    max_batch_records: int = _setting(500, "Records fetched per batch (getmany max_records).")
    fetch_timeout_ms: int = _setting(500, "Longest wait for a batch when idle, ms.")
    max_poll_interval_ms: int = _setting(300000, "Kafka max.poll.interval.ms.")
    session_timeout_ms: int = _setting(10000, "Kafka session timeout, ms.")
    user_concurrency: int = _setting(16, "Users processed in parallel within a batch or sweep.")
    sweep_batch_size: int = _setting(
        500, "Documents per cursor batch in sweeps; users between two full-sweep checkpoints."
    )
    max_message_bytes: int = _setting(65536, "Larger input values are dead-lettered.")
    tick_max_future_seconds: int = _setting(300, "Ticks further ahead than this are dead-lettered.")
    check_log_max_bytes: int = _setting(
        900000,
        "Largest check-log document or message; larger logs are split into parts. At most "
        "1032192: the producer's request size (1 MiB) less room for framing.",
    )
    dead_letter_max_bytes: int = _setting(
        DEAD_LETTER_MAX_BYTES,
        "Largest dead-letter record (key, value, headers, framing); a larger one is cut: it "
        "keeps a prefix of the input's value, its length and SHA-256, and the headers that "
        "fit, and cannot be replayed. At most 1048576 (the producer's request size) and the "
        "dead-letter topic's `max.message.bytes`.",
    )
    tick_shards: int = _setting(
        1, "Shard ticks `tick --mode due` publishes (spread over replicas)."
    )
    check_log_interval_seconds: float = _setting(
        60.0, "Interval of check-log summaries of the transitions made."
    )
    check_log_max_pending_intervals: int = _setting(
        60,
        "Interval summaries kept while the check-log write fails; past it the oldest are"
        " dropped, counted and logged (`check_log_intervals_dropped`).",
    )
    outbox_relay_interval_seconds: float = _setting(
        10.0, "How often orphaned outbox entries are looked for."
    )
    outbox_watermark_interval_seconds: float = _setting(
        5.0,
        "How often this replica saves which of its relays Kafka acknowledged (one small"
        " write), and reads the other replicas' (one small read). Shorter: fewer events"
        " published twice when two replicas write the same user within it; longer: fewer"
        " store commands.",
    )
    outbox_orphan_age_seconds: float = _setting(
        30.0, "Outbox entries older than this are re-published by any replica."
    )
    conflict_retries: int = _setting(
        10, "Re-reads after a write conflict before giving up a batch (0 or more)."
    )
    backoff_initial_seconds: float = _setting(0.2, "First back-off after a transient fault.")
    backoff_max_seconds: float = _setting(10.0, "Longest back-off after transient faults.")
    shutdown_grace_seconds: float = _setting(25.0, "Time to finish work after SIGTERM.")
    producer_linger_ms: int = _setting(5, "Producer linger, ms.")
    read_batch_max_bytes: int = _setting(
        16777216,
        "Most bytes (BSON) of user documents a ticket-used batch holds at once; "
        "more are read in rounds.",
    )
    liveness_max_stall_seconds: float = _setting(
        30.0,
        "/healthz fails when the event loop has not turned for this long (blocked or lagging).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read settings from ``environ``; raise :class:`ConfigError` on a bad value."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(PREFIX + spec.name.upper())
            if spec.metadata["secret"]:
                raw = _secret_value(spec.name, raw, environ.get(_file_variable(spec.name)))
            if raw is None:
                continue
            values[spec.name] = _convert(spec.name, raw, _CONVERTERS[str(spec.type)])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError`, naming the variable, for a value that cannot work."""
        protocols = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
        if self.kafka_security_protocol not in protocols:
            raise ConfigError(
                f"PASS_STATUS_KAFKA_SECURITY_PROTOCOL must be one of {sorted(protocols)}"
            )
        mechanisms = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        if self.kafka_sasl_mechanism not in mechanisms:
            raise ConfigError(
                f"PASS_STATUS_KAFKA_SASL_MECHANISM must be one of {sorted(mechanisms)}"
            )
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_username:
            raise ConfigError(
                "PASS_STATUS_KAFKA_SASL_USERNAME must be set with PASS_STATUS_KAFKA_SECURITY_"
                f"PROTOCOL={self.kafka_security_protocol}"
            )
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("PASS_STATUS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        _check_write_concern(self.mongodb_write_concern)
        _check_finite(self)
        _check_mongodb_uri(self.mongodb_uri)
        for name, minimum in _MINIMUMS.items():
            if getattr(self, name) < minimum:
                raise ConfigError(f"PASS_STATUS_{name.upper()} must be at least {minimum}")
        if self.liveness_max_stall_seconds <= 1:
            raise ConfigError("PASS_STATUS_LIVENESS_MAX_STALL_SECONDS must be more than 1")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("PASS_STATUS_HTTP_PORT must be between 0 and 65535")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ConfigError(
                "PASS_STATUS_BACKOFF_MAX_SECONDS must be at least "
                "PASS_STATUS_BACKOFF_INITIAL_SECONDS"
            )
        if self.dead_letter_max_bytes > PRODUCER_MAX_REQUEST_BYTES:
            raise ConfigError(
                f"PASS_STATUS_DEAD_LETTER_MAX_BYTES must be at most {PRODUCER_MAX_REQUEST_BYTES}"
                " (the producer's request size; a dead letter is one record)"
            )
        if self.check_log_max_bytes > CHECK_LOG_MAX_BYTES_LIMIT:
            raise ConfigError(
                f"PASS_STATUS_CHECK_LOG_MAX_BYTES must be at most {CHECK_LOG_MAX_BYTES_LIMIT} "
                f"(the producer's request size, {PRODUCER_MAX_REQUEST_BYTES} bytes, less "
                "room for the record's framing)"
            )

    def secrets(self) -> tuple[str, ...]:
        """Secret values, so that log output can be scrubbed of them."""
        out = [self.kafka_sasl_password] if self.kafka_sasl_password else []
        from consumer.redact import uri_password  # noqa: PLC0415 - avoids an import cycle

        password = uri_password(self.mongodb_uri)
        if password:
            out.append(password)
        return tuple(out)


def _file_variable(name: str) -> str:
    """``PASS_STATUS_<NAME>_FILE``: the file that holds a secret setting's value."""
    return f"{PREFIX}{name.upper()}{FILE_SUFFIX}"


def _secret_value(name: str, value: str | None, path: str | None) -> str | None:
    """A secret setting's value: from its variable, or read from the file its ``_FILE``
    variable names (a Secret mounted as a file); exactly one of the two may be set. Errors
    name the variables and the path, never the content."""
    if path is None:
        return value
    variable = PREFIX + name.upper()
    if value is not None:
        raise ConfigError(f"set {variable} or {_file_variable(name)}, not both")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{_file_variable(name)}: cannot read {path}: {reason}") from None
    text = text.rstrip("\r\n")  # files written by editors and echo end with a newline
    if not text:
        raise ConfigError(f"{_file_variable(name)}: {path} is empty")
    return text


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``PASS_STATUS_*`` variables that are no setting (a misspelling, say), each with the
    setting it most resembles, if any: ``["PASS_STATUS_GRUOP_ID (PASS_STATUS_GROUP_ID?)"]``.
    Variables of the repository's own tools (``scripts/services``, tests) are not listed.
    """
    known = [PREFIX + spec.name.upper() for spec in dataclasses.fields(Settings)]
    known += [_file_variable(f.name) for f in dataclasses.fields(Settings) if f.metadata["secret"]]
    unknown = []
    for name in sorted(environ):
        if not name.startswith(PREFIX) or name in known or name.startswith(TOOL_VARIABLES):
            continue
        suffixes = [k.removeprefix(PREFIX) for k in known]
        close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1)
        unknown.append(f"{name} ({PREFIX}{close[0]}?)" if close else name)
    return unknown


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting; secrets show no default."""
    rows = []
    for spec in dataclasses.fields(Settings):
        default = "" if spec.metadata["secret"] and spec.name != "mongodb_uri" else spec.default
        rows.append((PREFIX + spec.name.upper(), str(default), str(spec.metadata["help"])))
        if spec.metadata["secret"]:
            help_text = (
                f"File holding {PREFIX}{spec.name.upper()} (a Secret mounted as a file; one "
                "trailing newline ignored). Set one of the two, not both."
            )
            rows.append((_file_variable(spec.name), "", help_text))
    return rows


def _convert(name: str, raw: str, convert: Callable[[str], Any]) -> Any:
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"PASS_STATUS_{name.upper()}: cannot read {raw!r}") from None


def _check_write_concern(value: str) -> None:
    if not (value == "majority" or value.isdigit()):
        raise ConfigError("PASS_STATUS_MONGODB_WRITE_CONCERN must be majority or a number")
    if value.isdigit() and int(value) == 0:
        # w:0 returns no matched_count: a conditional write could not tell a lost race from
        # an applied change, and a refused write would pass unseen.
        raise ConfigError(
            "PASS_STATUS_MONGODB_WRITE_CONCERN must be majority or at least 1: conditional"
            " writes need acknowledged writes (w:0 reports no match count)"
        )


def _check_finite(settings: Settings) -> None:
    # A NaN compares false with every bound (a NaN back-off spins); an infinite interval or
    # deadline never comes. Checked before the bounds, so the message says what is wrong.
    for spec in dataclasses.fields(settings):
        value = getattr(settings, spec.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"PASS_STATUS_{spec.name.upper()} must be a finite number, not {value!r}"
            )


def _check_mongodb_uri(uri: str) -> None:
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("PASS_STATUS_MONGODB_URI must begin with mongodb:// or mongodb+srv://")
    if uri.startswith("mongodb+srv://"):
        return  # parsing it would look up DNS records: the client reports its errors
    from pymongo.errors import ConfigurationError  # noqa: PLC0415 - only online commands need it
    from pymongo.uri_parser import parse_uri  # noqa: PLC0415

    from consumer.redact import uri_password  # noqa: PLC0415 - avoids an import cycle

    try:
        parse_uri(uri)
    except (ConfigurationError, ValueError) as exc:
        message = str(exc)
        password = uri_password(uri)
        if password:
            message = message.replace(password, "***")
        raise ConfigError(f"PASS_STATUS_MONGODB_URI is not a MongoDB URI: {message}") from None


# Each setting's smallest workable value (numbers, times and sizes).
_MINIMUMS: dict[str, float] = {
    "mongodb_timeout_ms": 1,
    "mongodb_index_timeout_ms": 1,
    "max_batch_records": 1,
    "fetch_timeout_ms": 1,
    "max_poll_interval_ms": 1,
    "session_timeout_ms": 1,
    "user_concurrency": 1,
    "sweep_batch_size": 1,
    "max_message_bytes": 1,
    "tick_max_future_seconds": 0,
    "check_log_max_bytes": 4096,
    "dead_letter_max_bytes": 16384,
    "tick_shards": 1,
    "read_batch_max_bytes": 1,
    "check_log_interval_seconds": 0.001,
    "check_log_max_pending_intervals": 1,
    "outbox_relay_interval_seconds": 0.001,
    "outbox_orphan_age_seconds": 0,
    "outbox_watermark_interval_seconds": 0.001,
    "conflict_retries": 0,
    "backoff_initial_seconds": 0.001,
    "backoff_max_seconds": 0.001,
    "shutdown_grace_seconds": 0,
    "producer_linger_ms": 0,
}

# aiokafka's producer sends requests of at most this size (its max_request_size default);
# a check-log message must fit in one, with room for the record's key and framing.
PRODUCER_MAX_REQUEST_BYTES = 1_048_576
CHECK_LOG_MAX_BYTES_LIMIT = PRODUCER_MAX_REQUEST_BYTES - 16_384

# Variables of the repository's tools (scripts/services, the fault suite), not settings.
TOOL_VARIABLES = (
    "PASS_STATUS_CACHE",
    "PASS_STATUS_STATE",
    "PASS_STATUS_LOCAL_",
    "PASS_STATUS_SERVICES_",
    "PASS_STATUS_PYTHON",
    "PASS_STATUS_FAULTS_",
)

_CONVERTERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}
