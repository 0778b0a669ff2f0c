"""Relay keys and watermarks (``consumer/domain/watermarks.py``), and this process's ledger
of its relays (``consumer/service/relay_ledger.py``)."""

from __future__ import annotations

from consumer.adapters.mongo_outbox import unpublished_query
from consumer.domain.outbox import OUTBOX, OUTBOX_RELAY
from consumer.domain.watermarks import (
    MAX_SEQ,
    MAX_SOURCE,
    Watermark,
    key_published,
    parse_relay_key,
    relay_key,
    unpublished_filter,
)
from consumer.service.relay_ledger import FAILED_SEQ_HOLD_SECONDS, RelayLedger
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.mongo_semantics import matches

SOURCES = st.integers(1, 4)
SEQS = st.integers(min_value=1, max_value=2000)


def test_a_key_names_its_source_and_seq_and_junk_names_none() -> None:
    assert parse_relay_key(relay_key(3, 42)) == (3, 42)
    assert parse_relay_key(relay_key(MAX_SOURCE, MAX_SEQ)) == (MAX_SOURCE, MAX_SEQ)
    assert relay_key(MAX_SOURCE, MAX_SEQ) < 2**53  # exact as a double, as SQLite compares
    for junk in (None, 7, True, "3/42", 4.2e9, relay_key(3, 0), 2**53, -relay_key(3, 1)):
        assert parse_relay_key(junk) is None


def test_published_means_up_to_through_but_the_unsettled() -> None:
    mark = Watermark(10, frozenset({4}))
    assert [s for s in range(1, 13) if mark.published(s)] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    marks = {1: mark}
    assert key_published(relay_key(1, 3), marks)
    assert not key_published(relay_key(1, 4), marks)
    assert not key_published(relay_key(2, 1), marks)  # an unknown source: not published
    assert not key_published(None, marks)


@given(
    st.dictionaries(
        SOURCES,
        st.tuples(st.integers(0, 2000), st.frozensets(SEQS, max_size=5)),
        max_size=3,
    ),
    st.lists(st.tuples(SOURCES, SEQS), max_size=30),
)
def test_the_scan_query_finds_exactly_the_keys_not_published(
    marks: dict[int, tuple[int, frozenset[int]]], keys: list[tuple[int, int]]
) -> None:
    """Keys of a source sort together and by seq: one range and one ``$in`` per source
    select exactly what its watermark does not cover (neighbouring sources included), and
    nothing of a source not asked for."""
    watermarks = {s: Watermark(t, u) for s, (t, u) in marks.items()}
    query = unpublished_query(watermarks)
    for source, seq in keys:
        doc = {OUTBOX: [{"event_id": "e"}], OUTBOX_RELAY: relay_key(source, seq)}
        wanted = source in watermarks and not watermarks[source].published(seq)
        assert matches(doc, query) == wanted, (source, seq)


def test_a_source_with_nothing_unsettled_is_one_range() -> None:
    assert unpublished_filter("k", 2, Watermark(3)) == {
        "k": {"$gt": relay_key(2, 3), "$lt": relay_key(3, 0)}
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_ledger_publishes_a_seq_only_once_its_relay_closed_published() -> None:
    ledger = RelayLedger(1)
    first, second = ledger.open(), ledger.open()
    assert not ledger.published(first.key)
    ledger.close(second, published=True)
    assert ledger.published(second.key)
    assert not ledger.published(first.key)  # still in flight
    assert ledger.watermark() == Watermark(2, frozenset({1}))
    ledger.close(first, published=True)
    assert ledger.watermark() == Watermark(2)
    assert ledger.idle
    assert not ledger.published(relay_key(1, 3))  # not allotted yet


def test_a_failed_relay_that_stamped_stays_unsettled_until_no_document_holds_its_key() -> None:
    clock = Clock()
    ledger = RelayLedger(1, clock)
    failed, unstamped = ledger.open(), ledger.open()
    failed.stamped = True
    ledger.close(failed, published=False)
    ledger.close(unstamped, published=False)  # no write was sent with its key
    assert ledger.published(unstamped.key)
    assert not ledger.published(failed.key)
    assert not ledger.idle

    ledger.retire_failed(frozenset())  # too soon: a write with its key could still land
    assert not ledger.published(failed.key)
    clock.now += FAILED_SEQ_HOLD_SECONDS
    ledger.retire_failed(frozenset({failed.key}))  # a document still holds it unpublished
    assert not ledger.published(failed.key)
    ledger.retire_failed(frozenset())
    assert ledger.published(failed.key)
    assert ledger.idle


def test_the_ledger_answers_for_other_sources_from_their_saved_watermarks() -> None:
    ledger = RelayLedger(1)
    ledger.learn({2: Watermark(5, frozenset({2})), 1: Watermark(0)})
    assert ledger.published(relay_key(2, 5))
    assert not ledger.published(relay_key(2, 2))
    assert not ledger.published(relay_key(3, 1))
    own = ledger.open()
    ledger.close(own, published=True)
    assert ledger.published(own.key)  # its own state, not the saved copy learned
    assert ledger.watermarks()[1] == Watermark(1)
