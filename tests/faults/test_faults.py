"""Prove nothing is lost: each scenario runs continuous traffic (thousands of ticket-used
events over hundreds of users, due ticks, a full tick) against consumer processes while a
fault strikes, then compares MongoDB and the output topic with an independent model
(tests/faults/checker.py). Each must end with lost = 0, wrong = 0 and rewritten = 0:
the store's conditional updates are atomic (tests/store), so no write may be undone, with
any number of replicas and a foreign writer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from consumer.errors import MessageTooLargeError

from tests.faults.checker import Report
from tests.faults.poison import LagMonitor, refuse_status_topic
from tests.faults.scenario import (
    ForeignWriter,
    Scenario,
    committed_offsets,
    deployment,
    local_server,
    record_figures,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

# Replicas of the multi-replica scenarios: as many as the input topics' partitions.
REPLICAS = 3


@pytest.fixture
async def scenario(
    kafka_bootstrap: str, mongodb_uri: str, unique_name: str
) -> AsyncIterator[Scenario]:
    async with deployment(unique_name, kafka_bootstrap, mongodb_uri) as service:
        sc = Scenario(unique_name, service, kafka_bootstrap, mongodb_uri, seed=_seed(unique_name))
        try:
            yield sc
        finally:
            sc.kill_all()


def _seed(name: str) -> int:
    return sum(name.encode()) * 7919


def _finish(name: str, sc: Scenario, report: Report, **figures: Any) -> None:
    assert sc.traffic is not None
    processed = sum(
        len(p.events("user_updated")) for p in sc.consumers
    )  # writes, not events: a lower bound of work
    record_figures(
        name,
        {
            "users": sc.users,
            "ticket_used_events": sc.traffic.sent,
            "ticks": sc.traffic.ticks_sent,
            "consumer_processes": len(sc.consumers),
            "user_writes_logged": processed,
            **report.figures(),
            **figures,
        },
    )
    assert report.expected_events > sc.users, "the scenario must exercise many transitions"
    assert report.ok, report.describe()


async def test_baseline_no_fault(scenario: Scenario) -> None:
    """The same traffic without a fault: the reference the other scenarios compare to."""
    sc = scenario
    sc.traffic_seconds = 20
    await sc.seed_documents()
    sc.consumer("c1").start()
    await sc.start_traffic()
    _expected, report = await sc.converge()
    _finish("baseline", sc, report)


async def test_sigkill_a_consumer_at_random_moments(scenario: Scenario) -> None:
    """SIGKILL the consumer at random moments (starting, joining, mid-batch, mid-sweep) at
    least 20 times, restarting it each time, with two replicas alive most of the time."""
    sc = scenario
    sc.traffic_seconds = 45
    await sc.seed_documents()
    rng = random.Random(sc.seed)
    sc.consumer("steady").start()
    traffic = sc.start_traffic()
    kills = 0
    while not traffic.done() or kills < 20:
        victim = sc.spawn(f"victim-{kills}")
        await asyncio.sleep(rng.uniform(0.5, 5.0))
        assert victim.proc is not None
        assert victim.proc.poll() is None, "\n".join(victim.raw[-20:])  # it did not die alone
        victim.kill()
        kills += 1
        if kills % 5 == 0:
            # Now and then kill the steady one as well, so no replica lives throughout.
            steady = next(p for p in reversed(sc.consumers) if p.name.startswith("steady"))
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            assert steady.proc is not None
            assert steady.proc.poll() is None, "\n".join(steady.raw[-20:])
            steady.kill()
            kills += 1
            sc.spawn(f"steady-{kills}")
    await traffic
    _expected, report = await sc.converge()
    _finish("sigkill", sc, report, kills=kills)
    assert kills >= 20


async def test_kafka_broker_restart_mid_stream(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A broker of the test's own is stopped and started again while traffic flows (with a
    FerretDB of its own too, so that other scenarios' load does not slow it down)."""
    with (
        local_server("mongodb", tmp_path / "ferretdb", kafka_bootstrap) as ferret,
        local_server("kafka", tmp_path / "kafka", ferret.address) as broker,
    ):
        async with deployment(unique_name, broker.address, ferret.address) as service:
            sc = Scenario(
                unique_name, service, broker.address, ferret.address, seed=_seed(unique_name)
            )
            sc.traffic_seconds = 30
            try:
                await sc.seed_documents()
                sc.consumer("c1").start()
                traffic = sc.start_traffic()
                await asyncio.sleep(10)
                down_at = time.monotonic()
                await asyncio.to_thread(broker.down)
                await asyncio.sleep(5)
                await asyncio.to_thread(broker.up)
                outage = time.monotonic() - down_at
                await traffic
                assert sc.consumers[0].proc is not None
                assert sc.consumers[0].proc.poll() is None, "the consumer must survive"
                _expected, report = await sc.converge()
            finally:
                sc.kill_all()
            _finish("kafka_restart", sc, report, restarts=1, outage_seconds=round(outage, 1))


async def test_ferretdb_outage_stops_commits_reports_not_ready_and_recovers(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """FerretDB of the test's own is stopped for ~25 s under traffic: committed offsets do
    not move, /readyz answers 503, and the consumer recovers by itself afterwards."""
    with local_server("mongodb", tmp_path / "services", kafka_bootstrap) as ferret:
        async with deployment(unique_name, kafka_bootstrap, ferret.address) as service:
            sc = Scenario(
                unique_name, service, kafka_bootstrap, ferret.address, seed=_seed(unique_name)
            )
            sc.traffic_seconds = 30
            group, topic = service.settings.group_id, service.settings.topic_ticket_used
            try:
                await sc.seed_documents()
                consumer = sc.consumer("c1")
                consumer.start()
                traffic = sc.start_traffic()
                await asyncio.sleep(10)
                await asyncio.to_thread(ferret.down)
                down_at = time.monotonic()
                await asyncio.sleep(8)  # in-flight work fails; the batch is retried, not committed
                frozen = await committed_offsets(kafka_bootstrap, group, topic)
                statuses = []
                while time.monotonic() - down_at < 25:
                    statuses.append(consumer.http_get("/readyz")[0])
                    await asyncio.sleep(1)
                still = await committed_offsets(kafka_bootstrap, group, topic)
                await asyncio.to_thread(ferret.up)
                outage = time.monotonic() - down_at
                assert still == frozen, "offsets were committed while MongoDB was down"
                assert 503 in statuses[-5:], f"/readyz during the outage: {statuses}"
                await traffic
                _expected, report = await sc.converge()
                assert consumer.proc is not None
                assert consumer.proc.poll() is None, "the consumer must survive"
                assert consumer.http_get("/readyz")[0] == 200
                after = await committed_offsets(kafka_bootstrap, group, topic)
                assert sum(after.values()) > sum(frozen.values())
            finally:
                sc.kill_all()
            _finish("ferretdb_outage", sc, report, outage_seconds=round(outage, 1))


async def test_rebalance_storm(scenario: Scenario) -> None:
    """Three replicas run throughout while two more join and leave (SIGTERM) again and
    again: partitions move back and forth, and sweeps of one replica write users whose
    ticket-used events another replica applies."""
    sc = scenario
    sc.traffic_seconds = 30
    await sc.seed_documents()
    rng = random.Random(sc.seed)
    for n in range(1, REPLICAS + 1):
        sc.consumer(f"steady-{n}").start()
    traffic = sc.start_traffic()
    cycles = 0
    while not traffic.done() or cycles < 6:
        extra = [sc.spawn(f"extra-{cycles}-{n}") for n in (4, 5)]
        await asyncio.sleep(rng.uniform(3.0, 8.0))
        for process in extra:
            process.stop(timeout=60)
        cycles += 1
    await traffic
    _expected, report = await sc.converge()
    revoked = sum(len(p.events("partitions_revoked")) for p in sc.consumers)
    _finish("rebalance_storm", sc, report, join_leave_cycles=cycles, revocations=revoked)


async def test_foreign_writer_rewrites_passes_during_traffic(scenario: Scenario) -> None:
    """The refresher rewrites users' passes (same passes, bumped timestamps) all along,
    while three replicas share the work."""
    sc = scenario
    sc.traffic_seconds = 30
    await sc.seed_documents()
    # One re-read per conflict only: lost races in a row must make the loop back off and
    # retry (WriteConflictError is transient), never stop it or stall a tick partition.
    for n in range(1, REPLICAS + 1):
        sc.consumer(f"c{n}", conflict_retries="1").start()
    traffic = sc.start_traffic()
    assert sc.traffic is not None
    writer = ForeignWriter(
        sc.mongodb_uri,
        sc.service,
        [s["user_id"] for s in sc.seeds],
        sc.traffic.recent_users,
        random.Random(sc.seed),
    )
    stop = asyncio.Event()
    writing = asyncio.create_task(writer.run(stop))
    await traffic
    stop.set()
    await writing
    _expected, report = await sc.converge()
    conflicts = sum(len(p.events("write_conflict")) for p in sc.consumers)
    _finish("foreign_writer", sc, report, foreign_writes=writer.writes, write_conflicts=conflicts)
    assert writer.writes > 100


async def test_poison_under_load(scenario: Scenario) -> None:
    """Good traffic mixed with 1 % inputs over the input limit, 1 % users whose documents
    the store refuses (a non-numeric ``pass_status_rev``: TypeMismatch, code 14), and a 20 s
    refusal of the status topic by the broker: every good input applied (lost 0, wrong 0,
    rewritten 0), each poison input dead-lettered once with its reason, nothing
    dead-lettered for the refusal, and no partition stalled while it had lag outside it."""
    sc = scenario
    sc.traffic_seconds = 40
    sc.oversized_fraction = 0.01
    sc.poisoned = set(random.Random(sc.seed).sample(range(1000, 1000 + sc.users), 2))
    await sc.seed_documents()
    settings = sc.service.settings
    sc.consumer("c1").start()
    stop = asyncio.Event()
    monitor = LagMonitor(sc.bootstrap, settings.group_id, settings.topic_ticket_used)
    watching = asyncio.create_task(monitor.run(stop))
    traffic = sc.start_traffic()
    await asyncio.sleep(10)
    start, end = await refuse_status_topic(sc.bootstrap, settings.topic_status_changed, 20)
    # The refusal, then the time the service needs to see it lifted (its back-off, at most
    # BACKOFF_MAX_SECONDS, plus the publish timeout of the attempt in flight).
    monitor.exclude(start, end + settings.backoff_max_seconds + 20)
    await traffic
    _expected, report = await sc.converge()
    stop.set()
    await watching
    paused = [e for p in sc.consumers for e in p.events("consumption_paused")]
    assert paused, "the refusal of the status topic must pause consumption"
    assert all(e["reason"] == "output_refused" for e in paused)

    assert sc.traffic is not None
    letters = await sc.dead_letters()
    too_large = [
        (d["source_partition"], d["source_offset"])
        for d in letters
        if d["reason"] != "store_rejected"
    ]
    # Compared with what is on the input topic, not with what the traffic meant to send: a
    # send retried through the refusal may land a record twice.
    assert sc.traffic.oversized_sent > 0
    assert len(sc.oversized_at) >= sc.traffic.oversized_sent
    assert sorted(too_large) == sorted(sc.oversized_at), (
        sorted(sc.oversized_at),
        [
            (d["reason"], d["source_topic"], d["source_partition"], d["source_offset"])
            for d in letters
            if d["reason"] != "store_rejected"
        ],
    )
    assert {d["reason"] for d in letters} <= {MessageTooLargeError.reason, "store_rejected"}
    refused = [d for d in letters if d["reason"] == "store_rejected"]
    refused_at = [(d["source_partition"], d["source_offset"]) for d in refused]
    assert {d["error_code"] for d in refused} == {14}
    assert sc.poisoned_at, "the poisoned users must have had traffic"
    assert sorted(refused_at) == sorted(sc.poisoned_at), "each poison input dead-lettered once"
    stall = monitor.longest_stall()
    assert len(monitor.samples) > 30, "the monitor must have watched the whole run"
    _finish(
        "poison_under_load",
        sc,
        report,
        oversized_inputs=len(sc.oversized_at),
        store_refused_inputs=len(refused),
        refusal_seconds=round(end - start, 1),
        pauses_logged=len(paused),
        longest_stall_outside_refusal_seconds=stall,
        lag_samples=len(monitor.samples),
    )
    # A wedged partition stalls for ever; a moving one at most a batch plus a back-off.
    assert stall < 30, f"a partition with lag did not commit for {stall} s"
