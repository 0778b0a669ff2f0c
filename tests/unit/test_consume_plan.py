"""The consume loop's decisions (``consumer/service/consume_plan.py``), without Kafka."""

from __future__ import annotations

from consumer.service.consume_plan import (
    ApplyBatch,
    ApplyOneByOne,
    BackOff,
    Commit,
    ConsumePlan,
    Pause,
    Recovered,
    Resume,
    Seek,
    Span,
    StartTicks,
)

USED_0, USED_1, TICK_0 = ("used", 0), ("used", 1), ("tick", 0)


def a_plan() -> ConsumePlan:
    plan = ConsumePlan("used", "tick")
    plan.partitions_assigned([USED_0, USED_1, TICK_0])
    return plan


def test_a_batch_starts_its_ticks_paused_and_applies_its_ticket_used_records() -> None:
    actions = a_plan().batch_fetched({USED_0: [5, 6, 7], TICK_0: [3], USED_1: [9]})
    assert actions == [
        Pause(TICK_0),
        StartTicks(TICK_0),
        ApplyBatch({USED_0: Span(5, 7), USED_1: Span(9, 9)}),
    ]


def test_an_applied_batch_commits_past_its_last_records() -> None:
    plan = a_plan()
    spans = {USED_0: Span(5, 7), USED_1: Span(9, 9)}
    assert plan.batch_applied(spans) == [Commit({USED_0: 8, USED_1: 10}), Recovered()]


def test_a_transient_fault_seeks_back_to_the_batch_start_and_commits_nothing() -> None:
    plan = a_plan()
    spans = {USED_0: Span(5, 7), USED_1: Span(9, 9)}
    actions = plan.batch_failed(spans, retriable=True, one_by_one=False)
    assert actions == [Seek(USED_0, 5), Seek(USED_1, 9), BackOff("ticket_used_batch")]
    assert not any(isinstance(a, Commit) for a in actions)


def test_any_other_failure_applies_the_batch_one_record_at_a_time_then_commits() -> None:
    plan = a_plan()
    spans = {USED_0: Span(5, 7)}
    assert plan.batch_failed(spans, retriable=False, one_by_one=False) == [ApplyOneByOne(spans)]
    assert plan.batch_applied(spans) == [Commit({USED_0: 8}), Recovered()]


def test_a_failure_escaping_the_one_by_one_pass_is_retried_not_skipped() -> None:
    spans = {USED_0: Span(5, 7)}
    actions = a_plan().batch_failed(spans, retriable=False, one_by_one=True)
    assert actions == [Seek(USED_0, 5), BackOff("ticket_used_batch")]


def test_a_tick_commits_when_it_ends_and_its_partition_resumes_when_its_task_ends() -> None:
    plan = a_plan()
    plan.batch_fetched({TICK_0: [3, 4]})
    assert plan.tick_ended(TICK_0, 3) == [Commit({TICK_0: 4})]
    assert plan.tick_ended(TICK_0, 4) == [Commit({TICK_0: 5})]
    assert plan.ticks_stopped(TICK_0) == [Resume(TICK_0)]
    assert plan.batch_fetched({TICK_0: [5]}) == [Pause(TICK_0), StartTicks(TICK_0)]


def test_a_revoked_partition_is_neither_committed_nor_resumed() -> None:
    plan = a_plan()
    plan.batch_fetched({TICK_0: [3]})
    plan.partitions_revoked([TICK_0, USED_0])
    assert plan.tick_ended(TICK_0, 3) == []
    assert plan.ticks_stopped(TICK_0) == []
    assert plan.batch_applied({USED_0: Span(5, 7)}) == [Recovered()]
    assert plan.batch_failed({USED_0: Span(5, 7)}, retriable=True, one_by_one=False) == [
        BackOff("ticket_used_batch")
    ]


def test_commits_never_go_back() -> None:
    plan = a_plan()
    plan.commit_succeeded({USED_0: 8})
    assert plan.batch_applied({USED_0: Span(3, 4)}) == [Recovered()]
    assert plan.batch_applied({USED_0: Span(8, 8)}) == [Commit({USED_0: 9}), Recovered()]
