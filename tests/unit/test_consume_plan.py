"""The consume loop's decisions (``consumer/service/consume_plan.py``), without Kafka."""

from __future__ import annotations

import itertools

import pytest
from consumer.policy import Action
from consumer.service.consume_plan import (
    TRANSITIONS,
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
    State,
)
from consumer.service.consume_plan import Event as PlanEvent
from consumer.service.consume_plan import IllegalTransitionError as Illegal

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


def fetched(plan: ConsumePlan, *spans: tuple[tuple[str, int], Span]) -> ConsumePlan:
    plan.batch_fetched({p: list(range(s.first, s.last + 1)) for p, s in spans})
    return plan


def test_an_applied_batch_commits_past_its_last_records() -> None:
    plan = fetched(a_plan(), (USED_0, Span(5, 7)), (USED_1, Span(9, 9)))
    spans = {USED_0: Span(5, 7), USED_1: Span(9, 9)}
    assert plan.batch_applied(spans) == [Commit({USED_0: 8, USED_1: 10}), Recovered()]


@pytest.mark.parametrize("action", [Action.RETRY, Action.PAUSE])
def test_a_retry_or_a_pause_seeks_back_to_the_batch_start_and_commits_nothing(
    action: Action,
) -> None:
    plan = fetched(a_plan(), (USED_0, Span(5, 7)), (USED_1, Span(9, 9)))
    spans = {USED_0: Span(5, 7), USED_1: Span(9, 9)}
    actions = plan.batch_failed(spans, action, one_by_one=False)
    assert actions == [Seek(USED_0, 5), Seek(USED_1, 9), BackOff("ticket_used_batch")]
    assert not any(isinstance(a, Commit | ApplyOneByOne) for a in actions)
    assert plan.states[USED_0] is State.BACKING_OFF
    assert plan.backing_off
    # The same records come back: applied again from the start.
    assert plan.batch_fetched({USED_0: [5, 6, 7]}) == [ApplyBatch({USED_0: Span(5, 7)})]


def test_a_dead_letter_verdict_applies_the_batch_one_record_at_a_time_then_commits() -> None:
    plan = fetched(a_plan(), (USED_0, Span(5, 7)))
    spans = {USED_0: Span(5, 7)}
    assert plan.batch_failed(spans, Action.DEAD_LETTER, one_by_one=False) == [ApplyOneByOne(spans)]
    assert plan.states[USED_0] is State.ONE_BY_ONE
    assert plan.batch_applied(spans) == [Commit({USED_0: 8}), Recovered()]
    assert plan.states[USED_0] is State.IDLE


def test_a_failure_escaping_the_one_by_one_pass_is_retried_not_skipped() -> None:
    plan = fetched(a_plan(), (USED_0, Span(5, 7)))
    spans = {USED_0: Span(5, 7)}
    plan.batch_failed(spans, Action.DEAD_LETTER, one_by_one=False)
    actions = plan.batch_failed(spans, Action.DEAD_LETTER, one_by_one=True)
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
    assert plan.batch_failed({USED_0: Span(5, 7)}, Action.RETRY, one_by_one=False) == [
        BackOff("ticket_used_batch")
    ]


def test_commits_never_go_back() -> None:
    plan = a_plan()
    plan.commit_succeeded({USED_0: 8})
    fetched(plan, (USED_0, Span(3, 4)))
    assert plan.batch_applied({USED_0: Span(3, 4)}) == [Recovered()]
    fetched(plan, (USED_0, Span(8, 8)))
    assert plan.batch_applied({USED_0: Span(8, 8)}) == [Commit({USED_0: 9}), Recovered()]


def test_every_move_outside_the_table_is_refused_not_ignored() -> None:
    """The table is the whole machine: a runner bug shows as an error, not a lost commit."""
    for state, event in itertools.product(State, PlanEvent):
        plan = a_plan()
        plan.states[USED_0] = state
        if (state, event) in TRANSITIONS:
            assert plan._move(USED_0, event)
            assert plan.states[USED_0] is TRANSITIONS[state, event]
        else:
            with pytest.raises(Illegal):
                plan._move(USED_0, event)


def test_a_batch_applied_without_being_fetched_is_a_runner_bug() -> None:
    with pytest.raises(Illegal):
        a_plan().batch_applied({USED_0: Span(5, 7)})


def test_a_partition_moves_only_through_states_the_issue_names() -> None:
    """Assigned (idle), applying, one by one, backing off, paused for ticks: committed up
    to ``committed``; every state is reachable from idle."""
    reachable, frontier = {State.IDLE}, [State.IDLE]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(State)
