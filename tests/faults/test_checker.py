"""The checker must notice what it is there to notice: lost, wrong and duplicated events."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.faults.checker import (
    AmbiguousScenarioError,
    Expected,
    check,
    expected_outcome,
    fmt,
    out_of_order,
)
from tests.faults.scenario import make_seeds, plan_ticket_used

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _world() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], Expected]:
    rng = random.Random(7)
    seeds = make_seeds(rng, 30, 1, NOW)
    events = plan_ticket_used(rng, seeds, NOW)
    ticks = [{"event_id": "tick-1", "tick_at": fmt(NOW + timedelta(seconds=30)), "mode": "due"}]
    expected = expected_outcome(
        seeds, events, ticks, seeded_at=NOW, last_event_at=NOW + timedelta(minutes=5)
    )
    return seeds, events, ticks, expected


def _perfect(expected: Expected) -> tuple[list[dict[str, Any]], list[bytes]]:
    """What a correct consumer leaves behind."""
    docs = []
    for user_id, seed in expected.seeds.items():
        doc = copy.deepcopy(dict(seed))
        for want in expected.passes:
            if want.user_id == user_id:
                doc["passes"][want.index]["status"] = want.status
                doc["passes"][want.index]["payload"]["first_use"] = want.first_use
        doc["next_check_at"] = None
        docs.append(doc)
    published = [
        orjson.dumps(
            {
                "event_id": t.event_id,
                "user_id": t.user_id,
                "pass_uuid": t.pass_uuid,
                "from_status": t.from_status,
                "to_status": t.to_status,
                "status_log": t.status_log,
                "effective_at": t.effective_at,
                "detected_at": fmt(NOW),
                "cause": {"type": max(t.cause_types), "event_id": min(t.cause_ids)},
            }
        )
        # An expiring pass's USABLE -> USING first, then its USING -> EXPIRED.
        for t in [*expected.optional.values(), *expected.transitions.values()]
    ]
    return docs, published


def test_a_correct_outcome_passes_and_the_model_has_both_kinds_of_transition() -> None:
    _seeds, _events, _ticks, expected = _world()
    kinds = {t.status_log for t in expected.transitions.values()}
    assert {"USABLE -> USING", "USABLE -> EXPIRED", "USING -> EXPIRED"} <= kinds
    docs, published = _perfect(expected)
    report = check(expected, docs, published)
    assert report.ok, report.describe()
    assert report.duplicates == 0


def test_a_missing_event_and_a_missing_status_change_are_lost() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    using = next(
        w for w in expected.passes if w.status == "USING" and w.seeded["status"] == "USABLE"
    )
    doc = next(d for d in docs if d["user_id"] == using.user_id)
    doc["passes"][using.index]["status"] = "USABLE"
    # Neither written nor published: the status change and its event are both lost.
    unpublished = [
        raw
        for raw in published
        if (orjson.loads(raw)["pass_uuid"], orjson.loads(raw)["to_status"])
        != (using.pass_uuid, "USING")
    ]
    assert len(unpublished) == len(published) - 1
    report = check(expected, docs, unpublished)
    assert len(report.lost) == 2
    assert not report.wrong
    assert not report.rewritten


def test_a_change_undone_after_its_event_was_published_is_a_rewrite() -> None:
    # The write that set status and first_use was durable (its event, written in the
    # same update, was published), and another writer undid it afterwards.
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    using = next(
        w
        for w in expected.passes
        if w.status == "USING" and w.seeded["status"] == "USABLE" and w.first_use is not None
    )
    doc = next(d for d in docs if d["user_id"] == using.user_id)
    doc["passes"][using.index]["status"] = "USABLE"
    doc["passes"][using.index]["payload"]["first_use"] = using.seeded["payload"]["first_use"]

    report = check(expected, docs, published)

    assert len(report.rewritten) == 2
    assert not report.lost
    assert not report.ok  # a change undone is a failure


def test_duplicates_are_counted_not_failures_unless_their_content_differs() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    report = check(expected, docs, [*published, published[0], published[0]])
    assert report.ok
    assert report.duplicates == 2
    altered = orjson.loads(published[0])
    altered["detected_at"] = fmt(NOW + timedelta(seconds=1))
    report = check(expected, docs, [*published, orjson.dumps(altered)])
    assert len(report.rewritten) == 1
    assert not report.ok
    assert report.figures()["rewritten"] == 1
    assert report.figures()["wrong"] == 0


def test_wrong_transitions_contents_fields_and_dead_letters_are_wrong() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    bad = orjson.loads(published[0])
    bad["from_status"] = "USING" if bad["from_status"] == "USABLE" else "USABLE"
    idle = next(
        w for w in expected.passes if w.status == "USABLE" and w.seeded["status"] == "USABLE"
    )
    doc = next(d for d in docs if d["user_id"] == idle.user_id)
    doc["passes"][idle.index]["payload"]["vendor_extra"] = {"zone": "B"}
    spurious = {**orjson.loads(published[1]), "event_id": "not-a-transition"}
    dead = orjson.dumps({"reason": "unknown_pass", "message": "x"})
    report = check(
        expected, docs, [orjson.dumps(bad), *published[1:], orjson.dumps(spurious)], [dead]
    )
    assert len(report.wrong) == 4, report.describe()
    assert len(report.lost) == 0


def test_a_pass_expiring_during_the_run_is_refused() -> None:
    seeds, events, ticks, _expected = _world()
    seeds[0]["passes"][0]["status"] = "USABLE"
    seeds[0]["passes"][0]["payload"]["expiration"] = fmt(NOW + timedelta(minutes=2))
    with pytest.raises(AmbiguousScenarioError):
        expected_outcome(
            seeds, events, ticks, seeded_at=NOW, last_event_at=NOW + timedelta(minutes=5)
        )


def test_first_use_follows_the_first_event_in_offset_order() -> None:
    seeds, events, ticks, expected = _world()
    twice = next(
        e for e in events if sum(1 for x in events if x["pass_uuid"] == e["pass_uuid"]) > 1
    )
    same = [e for e in events if e["pass_uuid"] == twice["pass_uuid"]]
    reordered = [e for e in events if e["pass_uuid"] != twice["pass_uuid"]] + same[::-1]
    other = expected_outcome(
        seeds, reordered, ticks, seeded_at=NOW, last_event_at=NOW + timedelta(minutes=5)
    )
    docs, published = _perfect(expected)
    assert not check(other, docs, published).ok


def test_a_first_use_from_a_later_event_is_a_rewrite() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    want = next(w for w in expected.passes if w.later_first_uses)
    doc = next(d for d in docs if d["user_id"] == want.user_id)
    doc["passes"][want.index]["payload"]["first_use"] = min(want.later_first_uses)
    assert len(check(expected, docs, published).rewritten) == 1
    assert not check(expected, docs, published).ok


def test_a_first_use_undone_under_a_direct_expiry_is_a_rewrite() -> None:
    # A pass expired at seed: its ticket-used write sets first_use and expires it at once
    # (no USING event). A tick then expires it again after another writer undid that write;
    # the published expiry caused by the pass's own ticket-used proves the write durable.
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    want = next(
        w
        for w in expected.passes
        if w.status == "EXPIRED" and w.ticket_used_ids and w.seeded["payload"]["first_use"] is None
    )
    doc = next(d for d in docs if d["user_id"] == want.user_id)
    doc["passes"][want.index]["payload"]["first_use"] = None

    by_tick = [_with_cause(raw, want.pass_uuid, "tick-1") for raw in published]
    unproven = check(expected, docs, by_tick)  # no proof: a loss
    assert len(unproven.lost) == 1
    assert not unproven.wrong
    assert not unproven.rewritten
    own = min(want.ticket_used_ids)
    by_own_event = [_with_cause(raw, want.pass_uuid, own) for raw in published]
    report = check(expected, docs, by_own_event)
    assert len(report.rewritten) == 1
    assert not report.lost
    assert not report.ok


def _with_cause(raw: bytes, pass_uuid: str, cause_id: str) -> bytes:
    event = orjson.loads(raw)
    if event["pass_uuid"] == pass_uuid:
        event["cause"] = {
            "type": "tick" if cause_id.startswith("tick") else "ticket_used",
            "event_id": cause_id,
        }
    return orjson.dumps(event)


def test_an_unprovable_first_use_undo_is_a_loss() -> None:
    # A pass whose status needs no change: its first_use write publishes no event, so
    # nothing proves it was ever durable. With a foreign writer or not, a failure.
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    want = next(
        (
            w
            for w in expected.passes
            if w.status == w.seeded["status"]
            and w.ticket_used_ids
            and w.seeded["payload"]["first_use"] is None
        ),
        None,
    )
    if want is None:
        pytest.skip("the generated world has no first_use-only pass")
    doc = next(d for d in docs if d["user_id"] == want.user_id)
    doc["passes"][want.index]["payload"]["first_use"] = None

    report = check(expected, docs, published)
    assert len(report.lost) == 1
    assert not report.rewritten
    assert not report.ok


def _event(event_id: str, pass_uuid: str, log: str) -> bytes:
    from_status, to_status = log.split(" -> ")
    return orjson.dumps(
        {
            "event_id": event_id,
            "user_id": 1,
            "pass_uuid": pass_uuid,
            "from_status": from_status,
            "to_status": to_status,
            "status_log": log,
        }
    )


def test_out_of_order_finds_a_later_event_first_published_before_an_earlier_one() -> None:
    using, expired = _event("u", "p", "USABLE -> USING"), _event("e", "p", "USING -> EXPIRED")
    other = _event("o", "q", "USABLE -> USING")
    assert out_of_order([using, other, expired]) == []
    assert out_of_order([using, expired, using, using]) == []  # repeats of an earlier event
    assert len(out_of_order([expired, other, using])) == 1
    assert len(out_of_order([expired, using, expired])) == 1  # the first publications count


def _chains(expected: Expected) -> list[tuple[bytes, bytes]]:
    """The published (USABLE -> USING, USING -> EXPIRED) of each expiring pass."""
    _docs, published = _perfect(expected)
    by_id = {orjson.loads(raw)["event_id"]: raw for raw in published}
    return [(by_id[u], by_id[e]) for u, e in expected.chains]


def test_the_scenario_data_has_passes_used_then_expired_during_the_run() -> None:
    _seeds, _events, _ticks, expected = _world()
    assert len(expected.chains) >= 3
    docs, published = _perfect(expected)
    report = check(expected, docs, published)
    assert report.ok, report.describe()
    assert report.passes_with_two_events == len(expected.chains)


def test_a_pass_expired_before_it_is_seen_used_fails_the_order_check() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    using, expired = _chains(expected)[0]
    swapped = [r for r in published if r != using]
    swapped.insert(swapped.index(expired) + 1, using)  # USING -> EXPIRED first
    report = check(expected, docs, swapped)
    assert not report.ok
    assert len(report.out_of_order) == 1
    assert (report.lost, report.wrong, report.rewritten) == ([], [], [])


def test_repeats_of_an_earlier_event_after_a_later_one_pass() -> None:
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    repeats = [using for using, _expired in _chains(expected)]
    report = check(expected, docs, [*published, *repeats])
    assert report.ok, report.describe()
    assert report.duplicates == len(repeats)
    assert report.out_of_order == []


def test_an_expiring_pass_tells_one_story() -> None:
    """Processed after its expiration, the pass goes straight to EXPIRED (valid); a
    USING -> EXPIRED without its USABLE -> USING is lost; both USING and USABLE -> EXPIRED
    is wrong."""
    _seeds, _events, _ticks, expected = _world()
    docs, published = _perfect(expected)
    using, expired = _chains(expected)[0]
    straight = orjson.dumps(
        {**orjson.loads(expired), "from_status": "USABLE", "status_log": "USABLE -> EXPIRED"}
    )
    direct = [straight if r == expired else r for r in published if r != using]
    assert check(expected, docs, direct).ok

    report = check(expected, docs, [r for r in published if r != using])
    assert len(report.lost) == 1
    report = check(expected, docs, [straight if r == expired else r for r in published])
    assert len(report.wrong) == 1


def test_the_lag_monitor_finds_a_stall_and_ignores_excluded_windows() -> None:
    """The poison scenario's stall figure: time with lag and no commit, outside the
    windows a test excludes (a refusal it caused)."""
    from tests.faults.poison import LagMonitor  # noqa: PLC0415 - one test uses it

    monitor = LagMonitor("unused", "group", "topic", partitions=1)
    # (time, committed, end): committed reaches 5 at t=5 and stays there, with lag, to t=40.
    for at in range(0, 60, 5):
        committed = 5 if 10 <= at <= 40 else at
        monitor.samples.append((float(at), {0: committed}, {0: at + 3}))
    assert monitor.longest_stall() == 35.0
    monitor.exclude(20.0, 45.0)
    assert monitor.longest_stall() == 10.0  # t=5 to t=15, before the window
    caught_up = LagMonitor("unused", "group", "topic", partitions=1)
    caught_up.samples = [(float(at), {0: 7}, {0: 7}) for at in range(10)]
    assert caught_up.longest_stall() == 0.0
