"""The one exception tree of pass-status.

Every error this package raises on purpose derives from :class:`PassStatusError` and says,
through ``retriable``, whether doing the same thing again later can succeed::

    PassStatusError                      (retriable: varies)
    ├── ConfigError                      no   bad settings or CLI arguments (exit 2)
    │   └── IndexConflictError           no   an existing MongoDB index conflicts with one
    │                                         the service needs and cannot serve for it
    ├── InputError                       no   bad input; carries a dead-letter ``reason``
    │   ├── NotJsonError                 no   reason "not_json"
    │   ├── SchemaViolationError         no   reason "schema_violation"
    │   ├── MessageTooLargeError         no   reason "too_large"
    │   ├── UnknownUserError             no   reason "unknown_user"
    │   ├── UnknownPassError             no   reason "unknown_pass"
    │   ├── TickTooFarInFutureError      no   reason "tick_in_future"
    │   ├── UnreadableTimeError          no   reason "unreadable_time"
    │   └── BadDocumentError             no   reason "bad_document": the user's document is unusable
    │       └── DocumentRejectedError    no   reason "store_rejected": MongoDB (or the driver)
    │                                         refused this user's document for good; carries
    │                                         ``user_id`` and the server's ``code``
    ├── DocumentError                    no   a cache document this service cannot use
    ├── FileInputError                   no   offline ``check``: unreadable input file (exit 2)
    ├── TransientError                   yes  infrastructure is unavailable right now
    │   ├── StoreUnavailableError        yes  MongoDB unreachable, electing or timing out
    │   ├── BrokerUnavailableError       yes  Kafka unreachable, leader moving, timing out
    │   └── WriteConflictError           yes  the document kept changing between read and write
    ├── StoreRefusedError                no   MongoDB refuses this service (auth): pause
    ├── PublishRejectedError             no   Kafka refuses an output topic (not authorized,
    │   │                                     missing): pause; carries ``topic``
    │   ├── RecordRejectedError          no   refused for what the record holds (too large,
    │   │                                     invalid): that record never passes, others may
    │   └── ReplayRefusedError           no   a dead-letter replay stopped at a refusal;
    │                                         carries how many were replayed before it
    └── MissingTopicError                no   a configured topic does not exist at start

What each of them (and each PyMongo, BSON and aiokafka error) means, and what every path
does about it, is decided in one place: :mod:`consumer.policy`.
"""

from __future__ import annotations

from typing import ClassVar


class PassStatusError(Exception):
    """Base of every error this package raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(PassStatusError):
    """Settings or command-line arguments are invalid."""


class IndexConflictError(ConfigError):
    """An index of the cache (or checkpoint) collection conflicts with one the service
    creates (same name, other key or options; or same key, other name or options: MongoDB
    codes 85/86) and cannot serve the same lookups: the operator must change it, so start
    stops (exit 2) with a message naming the index, instead of retrying for ever."""


class InputError(PassStatusError):
    """An input event cannot be applied; ``reason`` is its dead-letter reason code."""

    reason: ClassVar[str] = "invalid_input"


class NotJsonError(InputError):
    """The message value is not UTF-8 JSON."""

    reason = "not_json"


class SchemaViolationError(InputError):
    """The message is JSON but does not match its event schema."""

    reason = "schema_violation"


class MessageTooLargeError(InputError):
    """The message value is larger than the configured limit."""

    reason = "too_large"


class UnknownUserError(InputError):
    """The event names a user with no cache document."""

    reason = "unknown_user"


class UnknownPassError(InputError):
    """The event names a pass the user's cache document does not hold."""

    reason = "unknown_pass"


class TickTooFarInFutureError(InputError):
    """A tick's ``tick_at`` lies further in the future than the configured tolerance."""

    reason = "tick_in_future"


class UnreadableTimeError(InputError):
    """A time value cannot be read; the message quotes the value."""

    reason = "unreadable_time"


class BadDocumentError(InputError):
    """The event's user has a cache document this service cannot evaluate."""

    reason = "bad_document"


class DocumentRejectedError(BadDocumentError):
    """MongoDB (or the driver, before sending) refused one user's document for a reason that
    does not change: the result would exceed 16 MB, document validation, a type mismatch
    (a non-numeric counter), a duplicate key, a value BSON cannot hold. Doing the same again
    fails the same way, so the event is dead-lettered and the user reported, never retried.
    ``user_id`` names the user when the operation concerned one; ``code`` is the server's."""

    reason = "store_rejected"

    def __init__(
        self, message: str, *, user_id: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.code = code


class DocumentError(PassStatusError):
    """A cache document (or a part of it) has a shape this service cannot use."""


class FileInputError(PassStatusError):
    """The offline check's input file cannot be read or parsed."""


class TransientError(PassStatusError):
    """Infrastructure is unavailable now; the same operation can succeed later."""

    retriable = True


class StoreUnavailableError(TransientError):
    """MongoDB cannot be reached or timed out."""


class BrokerUnavailableError(TransientError):
    """Kafka cannot be reached or timed out."""


class WriteConflictError(TransientError):
    """A user's document kept changing between read and write (``conflict_retries`` lost
    races in a row). Transient: the consume loop backs off and retries the batch or sweep
    instead of dying (a sweep's task would otherwise end and leave its partition paused)."""


class StoreRefusedError(PassStatusError):
    """MongoDB refuses this service itself (authentication or authorization failed): no
    input is at fault and retrying soon does not help; consumption pauses until fixed."""


class PublishRejectedError(PassStatusError):
    """Kafka refused to take records on ``topic`` for a reason that retrying soon cannot fix
    (not authorized, the topic is gone or invalid)."""

    def __init__(self, message: str, *, topic: str = "") -> None:
        super().__init__(message)
        self.topic = topic


class RecordRejectedError(PublishRejectedError):
    """Kafka refused a record for what it holds (too large, invalid): the same record is
    refused again whatever an operator fixes, while other records still pass. A status
    change so refused is moved out of its outbox (``consumer.domain.outbox``, I6); a
    refusal of the topic itself (not authorized) is a plain :class:`PublishRejectedError`
    and its events stay queued until it is fixed."""


class ReplayRefusedError(PublishRejectedError):
    """``dead-letters replay`` stopped: Kafka refused to publish (source topic missing or
    not authorized, record too large). ``replayed`` dead letters were published before."""

    def __init__(self, message: str, *, replayed: int, topic: str = "") -> None:
        super().__init__(message, topic=topic)
        self.replayed = replayed


class MissingTopicError(PassStatusError):
    """A configured topic does not exist on the cluster."""
