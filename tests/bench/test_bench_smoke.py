"""A tiny run of each benchmark against the test services, so the benchmarks cannot rot.

Imports nothing of the ``bench`` dependency group (matplotlib, pyinstrument), so it runs
with the default groups too.
"""

from __future__ import annotations

import math

import pytest
from bench.common import Endpoints

from bench import store_ops, sweeps, ticket_used

# The session fixtures of the integration tests (scripts/services, or the servers named by
# PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS / PASS_STATUS_MONGODB_URI).
from tests.integration.conftest import kafka_bootstrap, mongodb_uri, service_addresses

__all__ = ["kafka_bootstrap", "mongodb_uri", "service_addresses"]

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def endpoints(kafka_bootstrap: str, mongodb_uri: str) -> Endpoints:
    return Endpoints(kafka_bootstrap, mongodb_uri)


async def test_ticket_used_benchmark_runs(endpoints: Endpoints) -> None:
    cfg = ticket_used.Config(
        users=400,
        events=100,
        distributions=("uniform",),
        saturation_rate=20,
        rate_seconds=1,
        partitions=2,
        max_drain_seconds=60,
        latency_drain_seconds=30,
    )
    results = await ticket_used.run(endpoints, cfg, say=lambda _line: None)

    drains = results["throughput"]
    assert {d["pipeline"] for d in drains} == set(ticket_used.PIPELINES)
    for d in drains:
        assert not d["capped"], d
        assert d["processed"] == d["events"] == 100, d
        assert d["events_per_second"] > 0, d
        assert d["peak_rss_mb"] > 0, d
        assert {"pipeline", "machine"} <= set(d["cpu_percent"]), d
        assert d["pipeline_cpu_ms_per_event"] >= 0, d  # /proc ticks: 0 for a short drain
    (service,) = [d for d in drains if d["pipeline"] == "service"]
    # every uniform event uses pass 0 of its user: each is applied; a user's events of one
    # batch share its document's write, then its outbox is cleared
    assert service["applied_events"] == 100, service
    assert 0 < service["user_writes_per_applied_event"] <= 1, service
    assert service["rewrites_per_applied_event"] >= service["user_writes_per_applied_event"]
    assert service["batches"] >= 1, service
    assert service["store_commands_per_batch"] > 0, service
    assert service["conflicts_per_batch"] >= 0, service
    # the capacity model's inputs: each batch reads its distinct users' documents once
    # (no conflict here, so no read-back); every event was applied, so the documents
    # rewritten per event are the rewrites per applied event
    assert 0 < service["documents_read_per_event"] <= 1, service
    assert service["documents_written_per_event"] == service["rewrites_per_applied_event"]
    (per_doc,) = results["per_document"]
    assert per_doc["documents"] > 0, per_doc
    assert per_doc["read_ms_per_document"] > 0, per_doc
    assert per_doc["write_ms_per_document"] > 0, per_doc

    # latency: fractions of the service's measured drain rate, the same rates for the
    # passthrough, then the saturation point; naive has none
    (sustained,) = results["sustained"]
    assert sustained["events_per_second"] == service["events_per_second"]
    rows = results["latency"]
    assert {r["pipeline"] for r in rows} == {"service", "passthrough"}
    for pipeline in ("service", "passthrough"):
        mine = [r for r in rows if r["pipeline"] == pipeline]
        fractions = [r["fraction"] for r in mine if r["kind"] == "fraction"]
        assert fractions == list(ticket_used.FRACTIONS), mine
        for r in mine:
            if r["kind"] == "fraction":
                exact = r["fraction"] * sustained["events_per_second"]
                assert abs(r["offered_rate"] - exact) <= 0.5 or r["offered_rate"] == 1, r
                assert r["sustained_rate"] == sustained["events_per_second"], r
            else:
                assert r["offered_rate"] == cfg.saturation_rate, r
        assert [r["kind"] for r in mine].count("saturation") == 1
    for lat in rows:
        assert lat["drained"], lat
        assert lat["received"] == lat["sent"] > 0, lat
        assert 0 <= lat["p50_ms"] <= lat["p99_ms"] < 60_000, lat
        assert lat["peak_rss_mb"] > 0, lat
        assert lat["lag_growth_per_second"] is not None, lat
        assert {"pipeline", "machine"} <= set(lat["cpu_percent"]), lat
        # the service's batches over each point (what a small batch costs the store)
        if lat["pipeline"] == "service":
            assert lat["events_per_batch"] > 0, lat
            assert lat["store_commands_per_batch"] > 0, lat
        else:
            assert lat["events_per_batch"] is None, lat
    assert set(results["latency_peak_rss_mb"]) == {"service", "passthrough"}
    assert [s["pipeline"] for s in results["seeding"]] == ["service", "naive"]
    assert all(s["users"] == 400 and s["seconds"] > 0 for s in results["seeding"])
    rates = results["summary"]["events_per_second"]["uniform"]
    assert all(rate > 0 for rate in rates.values()), rates
    assert "service/naive" in results["summary"]["ratios"]["uniform"]


async def test_sweep_benchmark_runs(endpoints: Endpoints) -> None:
    rows = await sweeps.run(endpoints, [200, 400], say=lambda _line: None)

    assert [r["users"] for r in rows] == [200, 400]
    for r in rows:
        users = r["users"]
        due = users // sweeps.DUE_EVERY
        assert r["due_users"] == due
        assert r["terminal_users"] == sum(
            1 for u in range(1, users + 1) if u % sweeps.DUE_EVERY and u % 2 == 1
        )
        # What the due query reads beyond the due users is the service's business (its
        # own tests); the harness must make exactly the due users due, and the full
        # check must read everyone.
        assert r["due"]["documents_read"] >= due
        assert r["due"]["documents_changed"] == due
        assert r["full"]["documents_read"] == users
        assert r["full"]["documents_changed"] == due
        assert r["due_fixed"]["documents_changed"] == min(sweeps.FIXED_DUE, due)
        assert r["seed"]["users"] == users
        assert r["seed"]["seconds"] > 0
        for sweep in ("due", "full", "due_fixed"):
            assert "error" not in r[sweep], r[sweep]
            assert r[sweep]["seconds"] > 0
            assert r[sweep]["peak_rss_mb"] > 0
            assert 0 <= r[sweep]["longest_stall_ms"] < 60_000
            assert not math.isnan(r[sweep]["seconds"])


async def test_store_ops_benchmark_runs(endpoints: Endpoints) -> None:
    rows = await store_ops.run(endpoints.mongodb_uri, [50], repeat=2, say=lambda _line: None)

    assert [r["users"] for r in rows] == [50]
    timings = rows[0]["median_ms"]
    assert set(timings) == set(store_ops.OPERATIONS)
    assert all(ms > 0 for ms in timings.values()), timings
    assert "| find_one by user_id |" in store_ops.table(rows)
    assert rows[0]["seed"]["users"] == 50
