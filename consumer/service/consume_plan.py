"""The consume loop's decisions, without I/O: events in, actions out (as h11 does for HTTP).

The runner (:mod:`consumer.service.runner`) tells a :class:`ConsumePlan` what happened
(a batch was fetched, applied or failed, a tick finished, partitions moved) and carries
out the actions it returns (commit, seek, pause, resume, start a tick task, back off).

Each assigned partition is in one :class:`State`; :data:`TRANSITIONS` is the whole table of
the moves allowed, and a move not in it raises :class:`IllegalTransitionError` (a bug in the
runner, never silently ignored). The rules, each tested in
``tests/unit/test_consume_plan.py`` without Kafka:

- ticket-used records are applied batch by batch; a batch's offsets are committed only
  once it is applied;
- a failure the policy (:mod:`consumer.policy`) answers with *retry* or *pause* seeks
  every partition of the batch back to its first record and backs off: nothing is
  committed past unapplied work, nothing is dead-lettered;
- a failure answered with *dead-letter* re-applies the batch one record at a time, so that
  the record at fault is dead-lettered and the rest apply: the partition keeps moving; a
  failure escaping that (the dead-letter path itself) backs off like a retry;
- a tick partition is paused while its records run in a background task; each tick's
  offset is committed when it ends, and the partition resumes when the task ends;
- nothing is committed for a partition no longer assigned, and commits never go back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from consumer.policy import Action as PolicyAction

# A partition as ``(topic, partition)``; aiokafka's TopicPartition is such a tuple.
Partition = tuple[str, int]


class State(StrEnum):
    IDLE = "idle"
    """Assigned; its next records are fetched."""
    APPLYING = "applying"
    """A batch holding its records is being applied together."""
    ONE_BY_ONE = "one_by_one"
    """The batch is applied again record by record, dead-lettering those at fault."""
    BACKING_OFF = "backing_off"
    """Sought back to the batch's first record after a retry or pause; the next fetch
    returns the same records."""
    TICKING = "ticking"
    """A tick partition, paused while its ticks run in a background task."""


class Event(StrEnum):
    FETCHED = "fetched"
    TICKS_FETCHED = "ticks_fetched"
    APPLIED = "applied"
    FAILED_RETRY = "failed_retry"
    FAILED_ISOLATE = "failed_isolate"
    TICK_ENDED = "tick_ended"
    TICKS_STOPPED = "ticks_stopped"


TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.IDLE, Event.FETCHED): State.APPLYING,
    (State.BACKING_OFF, Event.FETCHED): State.APPLYING,
    (State.IDLE, Event.TICKS_FETCHED): State.TICKING,
    (State.BACKING_OFF, Event.TICKS_FETCHED): State.TICKING,
    (State.APPLYING, Event.APPLIED): State.IDLE,
    (State.ONE_BY_ONE, Event.APPLIED): State.IDLE,
    (State.APPLYING, Event.FAILED_RETRY): State.BACKING_OFF,
    (State.ONE_BY_ONE, Event.FAILED_RETRY): State.BACKING_OFF,
    (State.APPLYING, Event.FAILED_ISOLATE): State.ONE_BY_ONE,
    (State.ONE_BY_ONE, Event.FAILED_ISOLATE): State.BACKING_OFF,
    (State.TICKING, Event.TICK_ENDED): State.TICKING,
    (State.TICKING, Event.TICKS_STOPPED): State.IDLE,
}
"""(state, event) -> next state: every move a partition may make."""


class IllegalTransitionError(RuntimeError):
    """The runner reported an event the partition's state does not allow."""


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's records in a batch, first to last."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Commit:
    offsets: Mapping[Partition, int]


@dataclass(frozen=True, slots=True)
class Seek:
    partition: Partition
    offset: int


@dataclass(frozen=True, slots=True)
class Pause:
    partition: Partition


@dataclass(frozen=True, slots=True)
class Resume:
    partition: Partition


@dataclass(frozen=True, slots=True)
class StartTicks:
    partition: Partition


@dataclass(frozen=True, slots=True)
class ApplyBatch:
    """Apply the batch's ticket-used records together."""

    spans: Mapping[Partition, Span]


@dataclass(frozen=True, slots=True)
class ApplyOneByOne:
    """Apply the batch's ticket-used records one at a time, dead-lettering any that fail."""

    spans: Mapping[Partition, Span]


@dataclass(frozen=True, slots=True)
class BackOff:
    operation: str


@dataclass(frozen=True, slots=True)
class Recovered:
    pass


Action = (
    Commit | Seek | Pause | Resume | StartTicks | ApplyBatch | ApplyOneByOne | BackOff | Recovered
)


@dataclass(slots=True)
class ConsumePlan:
    """The decisions of one consumer: which partitions are ours, in which state, committed
    up to which offset."""

    ticket_used_topic: str
    tick_topic: str
    states: dict[Partition, State] = field(default_factory=dict)
    committed: dict[Partition, int] = field(default_factory=dict)

    @property
    def assigned(self) -> set[Partition]:
        return set(self.states)

    @property
    def ticking(self) -> set[Partition]:
        return {p for p, s in self.states.items() if s is State.TICKING}

    @property
    def backing_off(self) -> bool:
        """Some partition waits to fetch its failed batch again."""
        return any(s is State.BACKING_OFF for s in self.states.values())

    def _move(self, partition: Partition, event: Event) -> bool:
        """Apply ``event`` to an assigned partition; False if it is not ours (revoked)."""
        state = self.states.get(partition)
        if state is None:
            return False
        following = TRANSITIONS.get((state, event))
        if following is None:
            raise IllegalTransitionError(f"{partition}: {event} in state {state}")
        self.states[partition] = following
        return True

    # -- partitions ------------------------------------------------------------------

    def partitions_assigned(self, partitions: Sequence[Partition]) -> list[Action]:
        for partition in partitions:
            self.states.setdefault(partition, State.IDLE)
        return []

    def partitions_revoked(self, partitions: Sequence[Partition]) -> list[Action]:
        """Forget them: their tick tasks are cancelled (uncommitted) by the runner."""
        for partition in partitions:
            self.states.pop(partition, None)
            self.committed.pop(partition, None)
        return []

    # -- batches ---------------------------------------------------------------------

    def batch_fetched(self, batch: Mapping[Partition, Sequence[int]]) -> list[Action]:
        """A fetched batch (offsets per partition, in order): start ticks, apply the rest."""
        actions: list[Action] = []
        spans: dict[Partition, Span] = {}
        for partition, offsets in batch.items():
            if not offsets or partition not in self.states:
                continue
            if partition[0] == self.tick_topic:
                if self.states[partition] is State.TICKING:
                    continue  # records fetched before the pause took effect: the task has them
                self._move(partition, Event.TICKS_FETCHED)
                actions += [Pause(partition), StartTicks(partition)]
            elif partition[0] == self.ticket_used_topic:
                self._move(partition, Event.FETCHED)
                spans[partition] = Span(offsets[0], offsets[-1])
        if spans:
            actions.append(ApplyBatch(spans))
        return actions

    def batch_applied(self, spans: Mapping[Partition, Span]) -> list[Action]:
        for partition in spans:
            self._move(partition, Event.APPLIED)
        return [*self._commit({p: s.last + 1 for p, s in spans.items()}), Recovered()]

    def batch_failed(
        self, spans: Mapping[Partition, Span], action: PolicyAction, *, one_by_one: bool
    ) -> list[Action]:
        """The batch (applied together, or ``one_by_one``) failed; ``action`` is what the
        failure policy says the consume loop does about it."""
        isolate = action is PolicyAction.DEAD_LETTER
        event = Event.FAILED_ISOLATE if isolate else Event.FAILED_RETRY
        ours = {p: s for p, s in spans.items() if self._move(p, event)}
        if isolate and not one_by_one:
            return [ApplyOneByOne(ours)] if ours else []
        # Retry, pause, or an error escaping the one-by-one pass (the dead-letter path
        # itself failed): go back to the batch's start and back off; commit nothing.
        seeks: list[Action] = [Seek(p, s.first) for p, s in ours.items()]
        return [*seeks, BackOff("ticket_used_batch")]

    # -- ticks -----------------------------------------------------------------------

    def tick_ended(self, partition: Partition, offset: int) -> list[Action]:
        """A tick's outcome is durable (applied, or dead-lettered): commit past it."""
        if not self._move(partition, Event.TICK_ENDED):
            return []
        return self._commit({partition: offset + 1})

    def ticks_stopped(self, partition: Partition) -> list[Action]:
        """A tick task ended (all its ticks, or cancelled): resume the partition if ours."""
        return [Resume(partition)] if self._move(partition, Event.TICKS_STOPPED) else []

    # -- commits ---------------------------------------------------------------------

    def commit_succeeded(self, offsets: Mapping[Partition, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self.states:
                self.committed[partition] = max(offset, self.committed.get(partition, 0))

    def _commit(self, offsets: Mapping[Partition, int]) -> list[Action]:
        mine = {
            p: o for p, o in offsets.items() if p in self.states and o > self.committed.get(p, -1)
        }
        return [Commit(mine)] if mine else []
