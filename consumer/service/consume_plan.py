"""The consume loop's decisions, without I/O: events in, actions out (as h11 does for HTTP).

The runner (:mod:`consumer.service.runner`) tells a :class:`ConsumePlan` what happened
(a batch was fetched, applied or failed, a tick finished, partitions moved) and carries
out the actions it returns (commit, seek, pause, resume, start a tick task, back off).
The rules, each tested in ``tests/unit/test_consume_plan.py`` without Kafka:

- ticket-used records are applied batch by batch; a batch's offsets are committed only
  once it is applied;
- a transient fault seeks every partition of the batch back to its first record and
  backs off: nothing is committed past unapplied work;
- any other failure (a non-retriable error, an unexpected exception) re-applies the
  batch one record at a time, so that the record at fault is dead-lettered and the rest
  apply: the partition keeps moving;
- a tick partition is paused while its records run in a background task; each tick's
  offset is committed when it ends, and the partition resumes when the task ends;
- nothing is committed for a partition no longer assigned, and commits never go back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# A partition as ``(topic, partition)``; aiokafka's TopicPartition is such a tuple.
Partition = tuple[str, int]


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
    """The decisions of one consumer: which partitions are ours, ticking, committed."""

    ticket_used_topic: str
    tick_topic: str
    assigned: set[Partition] = field(default_factory=set)
    ticking: set[Partition] = field(default_factory=set)
    committed: dict[Partition, int] = field(default_factory=dict)

    # -- partitions ------------------------------------------------------------------

    def partitions_assigned(self, partitions: Sequence[Partition]) -> list[Action]:
        self.assigned.update(partitions)
        return []

    def partitions_revoked(self, partitions: Sequence[Partition]) -> list[Action]:
        """Forget them: their tick tasks are cancelled (uncommitted) by the runner."""
        for partition in partitions:
            self.assigned.discard(partition)
            self.ticking.discard(partition)
            self.committed.pop(partition, None)
        return []

    # -- batches ---------------------------------------------------------------------

    def batch_fetched(self, batch: Mapping[Partition, Sequence[int]]) -> list[Action]:
        """A fetched batch (offsets per partition, in order): start ticks, apply the rest."""
        actions: list[Action] = []
        spans: dict[Partition, Span] = {}
        for partition, offsets in batch.items():
            if not offsets:
                continue
            if partition[0] == self.tick_topic and partition not in self.ticking:
                self.ticking.add(partition)
                actions += [Pause(partition), StartTicks(partition)]
            elif partition[0] == self.ticket_used_topic:
                spans[partition] = Span(offsets[0], offsets[-1])
        if spans:
            actions.append(ApplyBatch(spans))
        return actions

    def batch_applied(self, spans: Mapping[Partition, Span]) -> list[Action]:
        return [*self._commit({p: s.last + 1 for p, s in spans.items()}), Recovered()]

    def batch_failed(
        self, spans: Mapping[Partition, Span], *, retriable: bool, one_by_one: bool
    ) -> list[Action]:
        """The batch (applied together, or ``one_by_one``) raised an error."""
        if retriable:
            seeks: list[Action] = [Seek(p, s.first) for p, s in spans.items() if p in self.assigned]
            return [*seeks, BackOff("ticket_used_batch")]
        if not one_by_one:
            return [ApplyOneByOne(spans)]
        # One record at a time dead-letters what fails; an error escaping that is a
        # fault of the dead-letter path itself: treat it as transient rather than skip.
        return self.batch_failed(spans, retriable=True, one_by_one=True)

    # -- ticks -----------------------------------------------------------------------

    def tick_ended(self, partition: Partition, offset: int) -> list[Action]:
        """A tick finished (done, dead-lettered or given up): commit past it."""
        return self._commit({partition: offset + 1})

    def ticks_stopped(self, partition: Partition) -> list[Action]:
        """A tick task ended (all its ticks, or cancelled): resume the partition if ours."""
        self.ticking.discard(partition)
        return [Resume(partition)] if partition in self.assigned else []

    # -- commits ---------------------------------------------------------------------

    def commit_succeeded(self, offsets: Mapping[Partition, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self.assigned:
                self.committed[partition] = max(offset, self.committed.get(partition, 0))

    def _commit(self, offsets: Mapping[Partition, int]) -> list[Action]:
        mine = {
            p: o for p, o in offsets.items() if p in self.assigned and o > self.committed.get(p, -1)
        }
        return [Commit(mine)] if mine else []
