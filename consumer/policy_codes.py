"""The MongoDB server codes and aiokafka error classes that :mod:`consumer.policy`'s rows
name. Codes are MongoDB's (``src/mongo/base/error_codes.yml``); they are stable across
server versions, unlike messages, which are never read."""

from __future__ import annotations

from aiokafka import errors as kafka

# MongoDB server codes ---------------------------------------------------------------------
# Transient: the deployment is electing, shutting down, overloaded or slow.
STORE_TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        24,  # LockTimeout
        43,  # CursorNotFound (a cursor timed out; reading again works)
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        202,  # NetworkInterfaceExceededTimeLimit
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        462,  # IngressRequestRateLimitExceeded
    }
)
STORE_TRANSIENT_LABELS = frozenset(
    {"RetryableWriteError", "TransientTransactionError", "SystemOverloadedError"}
)
# The store refuses this service itself.
STORE_REFUSED_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
# An existing index contradicts one the service asks for.
INDEX_CONFLICT_CODES = frozenset({67, 68, 85, 86})
# Deterministic refusals of one document's write: doing it again fails the same way.
DOCUMENT_CODES = frozenset(
    {
        2,  # BadValue
        14,  # TypeMismatch ($inc of a non-number pass_status_rev, say)
        28,  # PathNotViable
        40,  # ConflictingUpdateOperators
        52,  # DollarPrefixedFieldName
        66,  # ImmutableField
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        11000,  # DuplicateKey
        11001,  # DuplicateKey (legacy)
        17419,  # the updated document would exceed 16 MB
        17420,  # the same for an upsert
    }
)

# aiokafka classes --------------------------------------------------------------------------
# Kafka refuses a record for what it holds: that record never passes, others may.
KAFKA_RECORD_ERRORS: tuple[type[kafka.KafkaError], ...] = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordListTooLargeError,
    kafka.RecordTooLargeError,
    kafka.CorruptRecordException,
    kafka.InvalidTimestampError,
)
# Kafka refuses the client or the topic: an operator must act.
KAFKA_REFUSALS: tuple[type[kafka.KafkaError], ...] = (
    kafka.TopicAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.AuthenticationFailedError,
    kafka.SaslAuthenticationFailed,
    kafka.InvalidTopicError,
    kafka.PolicyViolationError,
)
# The idempotent producer's sequence for a partition is broken (a batch the broker refused
# left a gap): every later send fails alike until the producer is made anew.
KAFKA_PRODUCER_STATE_ERRORS: tuple[type[kafka.KafkaError], ...] = (
    kafka.OutOfOrderSequenceNumber,
    kafka.UnknownProducerId,
    kafka.InvalidProducerEpoch,
    kafka.InvalidProducerIdMapping,
    kafka.ProducerFenced,
)
