"""Kafka as production runs it: three brokers, replication factor 3, min.insync.replicas 2.

Each scenario runs the usual traffic (tests/faults/scenario.py) against consumer processes
while the cluster does what clusters do: a partition leader dies, the group coordinator's
broker dies in the middle of commits, two brokers are down at once (writes fail with
NotEnoughReplicas), every broker restarts in turn, consumers are SIGKILLed while leaders move.
Then MongoDB and the output topic are compared with the model (tests/faults/checker.py):
lost, wrong and rewritten must be 0. Each also reports the longest stall of the group's
commits and the time until commits resumed (docs/reliability.md, "Kafka cluster").

Several JVMs: run with ``make test-faults-cluster`` (PASS_STATUS_FAULTS_CLUSTER=1), one
scenario at a time; ~6 minutes in all. Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.faults.checker import Report
from tests.faults.cluster import BROKERS, LocalCluster, ProgressProbe, local_cluster
from tests.faults.scenario import Scenario, deployment, record_figures

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.timeout(1200)]

REPLICAS = 3


@pytest.fixture(scope="module")
def cluster(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster"), mongodb_uri) as running:
        yield running


@asynccontextmanager
async def cluster_scenario(
    cluster: LocalCluster, mongodb_uri: str, name: str, seconds: float = 40
) -> AsyncIterator[tuple[Scenario, ProgressProbe]]:
    async with deployment(name, cluster.bootstrap, mongodb_uri, replication_factor=3) as service:
        sc = Scenario(name, service, cluster.bootstrap, mongodb_uri, seed=sum(name.encode()) * 31)
        sc.traffic_seconds = seconds
        settings = service.settings
        probe = ProgressProbe(
            cluster.bootstrap, settings.group_id, (settings.topic_ticket_used, settings.topic_tick)
        )
        stop = asyncio.Event()
        probing = asyncio.create_task(probe.run(stop))
        try:
            yield sc, probe
        finally:
            stop.set()
            await probing
            sc.kill_all()
            for number in range(1, BROKERS + 1):  # the next scenario starts with all three
                cluster.start_broker(number)


def _finish(name: str, sc: Scenario, probe: ProgressProbe, report: Report, **figures: Any) -> None:
    assert sc.traffic is not None
    record_figures(
        f"cluster_{name}",
        {
            "brokers": BROKERS,
            "users": sc.users,
            "ticket_used_events": sc.traffic.sent,
            "ticks": sc.traffic.ticks_sent,
            "consumer_processes": len(sc.consumers),
            "longest_stall_s": round(probe.longest_stall(), 1),
            **report.figures(),
            **figures,
        },
    )
    assert report.expected_events > sc.users, "the scenario must exercise many transitions"
    assert report.ok, report.describe()


def _alive(sc: Scenario) -> None:
    for process in sc.consumers:
        if process.proc is not None and not process.name.startswith("victim"):
            assert process.proc.poll() is None, "\n".join(process.raw[-30:])


async def _kill_one_broker_under_load(
    cluster: LocalCluster,
    sc: Scenario,
    probe: ProgressProbe,
    replicas: int,
    victim_of: Callable[[Scenario], int],
) -> tuple[Report, dict[str, Any]]:
    """Traffic for 10 s, then SIGKILL the broker ``victim_of`` names; start it 15 s later."""
    await sc.seed_documents()
    for n in range(1, replicas + 1):
        sc.consumer(f"c{n}").start()
    traffic = sc.start_traffic()
    await asyncio.sleep(10)
    victim = await asyncio.to_thread(victim_of, sc)
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill_broker, victim)
    await asyncio.sleep(15)
    await asyncio.to_thread(cluster.start_broker, victim)
    back_at = time.monotonic()
    await traffic
    _alive(sc)
    _expected, report = await sc.converge()
    stall, recover = probe.fault_stall(killed_at, back_at)
    return report, {"killed_broker": victim, "fault_stall_s": stall, "recover_s": recover}


async def test_leader_of_the_status_topic_killed_under_load(
    cluster: LocalCluster, mongodb_uri: str, unique_name: str
) -> None:
    """SIGKILL the broker leading the status topic's partition 0 under load; restart it 15 s
    later. Its partitions' leadership moves to the in-sync followers."""
    async with cluster_scenario(cluster, mongodb_uri, unique_name) as (sc, probe):
        report, figures = await _kill_one_broker_under_load(
            cluster,
            sc,
            probe,
            1,
            lambda sc: cluster.leader_of(sc.service.settings.topic_status_changed, 0),
        )
    moved = sum(len(p.events("kafka_partition_leader_moved")) for p in sc.consumers)
    _finish("leader_killed", sc, probe, report, **figures, leader_moved_warnings=moved)


async def test_group_coordinator_broker_killed_during_commits(
    cluster: LocalCluster, mongodb_uri: str, unique_name: str
) -> None:
    """SIGKILL the broker coordinating the consumer group while it commits; restart it 15 s
    later. The group finds its new coordinator; no commit is lost or rewound."""
    async with cluster_scenario(cluster, mongodb_uri, unique_name) as (sc, probe):
        report, figures = await _kill_one_broker_under_load(
            cluster, sc, probe, 2, lambda sc: cluster.coordinator_of(sc.service.settings.group_id)
        )
    changed = sum(len(p.events("kafka_group_coordinator_changed")) for p in sc.consumers)
    _finish(
        "coordinator_killed", sc, probe, report, **figures, coordinator_changed_warnings=changed
    )


async def test_two_brokers_down_for_20_s_pauses_and_resumes_by_itself(
    cluster: LocalCluster, mongodb_uri: str, unique_name: str
) -> None:
    """Two of three brokers down for 20 s: one in-sync replica is fewer than
    min.insync.replicas, so writes (status events, commits) fail with NotEnoughReplicas. The
    service must not commit past what it wrote, must say it is not ready, must stay alive, and
    must resume by itself when the brokers return."""
    async with cluster_scenario(cluster, mongodb_uri, unique_name) as (sc, probe):
        await sc.seed_documents()
        consumer = sc.consumer("c1")
        consumer.start()
        traffic = sc.start_traffic()
        await asyncio.sleep(10)
        down = [1, 2]
        await asyncio.gather(*(asyncio.to_thread(cluster.kill_broker, n) for n in down))
        down_at = time.monotonic()
        statuses = []
        while time.monotonic() - down_at < 20:
            statuses.append(consumer.http_get("/readyz")[0])
            await asyncio.sleep(1)
        back_at = time.monotonic()  # both restarted at once; each answers some seconds later
        await asyncio.gather(*(asyncio.to_thread(cluster.start_broker, n) for n in down))
        await traffic
        _alive(sc)
        _expected, report = await sc.converge()
        ready_after = consumer.http_get("/readyz")[0]
    stall, recover = probe.fault_stall(down_at, back_at)
    _finish(
        "two_brokers_down",
        sc,
        probe,
        report,
        outage_s=round(back_at - down_at, 1),
        fault_stall_s=stall,
        recover_s=recover,
        readyz_during_outage=" ".join(map(str, statuses)),
        not_enough_replicas_warnings=sum(
            len(p.events("kafka_not_enough_replicas")) for p in sc.consumers
        ),
    )
    # the in-sync set shrinks within replica.lag.time.max.ms (10 s), then writes wait 5 s
    assert 503 in statuses[-5:], f"/readyz during the outage: {statuses}"
    assert ready_after == 200


async def test_rolling_restart_of_all_brokers_under_load(
    cluster: LocalCluster, mongodb_uri: str, unique_name: str
) -> None:
    """An upgrade: each broker in turn stopped (SIGTERM, controlled shutdown) and started,
    the next one once the restarted broker answers again, while traffic flows."""
    async with cluster_scenario(cluster, mongodb_uri, unique_name, seconds=60) as (sc, probe):
        await sc.seed_documents()
        for n in (1, 2):
            sc.consumer(f"c{n}").start()
        traffic = sc.start_traffic()
        await asyncio.sleep(8)
        started = time.monotonic()
        for number in range(1, BROKERS + 1):
            await asyncio.to_thread(cluster.kill_broker, number, graceful=True)
            await asyncio.sleep(3)
            await asyncio.to_thread(cluster.start_broker, number)
            await asyncio.sleep(8)  # the restarted broker catches up and rejoins the ISR
        rolled = time.monotonic() - started
        await traffic
        _alive(sc)
        _expected, report = await sc.converge()
    stall, recover = probe.fault_stall(started, started + rolled)
    _finish(
        "rolling_restart",
        sc,
        probe,
        report,
        restarts=BROKERS,
        rolling_restart_s=round(rolled, 1),
        fault_stall_s=stall,
        recover_s=recover,
    )


async def test_sigkill_consumer_replicas_during_a_leader_move(
    cluster: LocalCluster, mongodb_uri: str, unique_name: str
) -> None:
    """Three replicas; the leader of the input topic's partition 0 is killed and, while
    leadership moves, two replicas are SIGKILLed and replaced; the broker returns 15 s later."""
    async with cluster_scenario(cluster, mongodb_uri, unique_name) as (sc, probe):
        await sc.seed_documents()
        rng = random.Random(sc.seed)
        for n in range(1, REPLICAS + 1):
            sc.consumer(f"steady-{n}").start()
        traffic = sc.start_traffic()
        await asyncio.sleep(10)
        victim = await asyncio.to_thread(
            cluster.leader_of, sc.service.settings.topic_ticket_used, 0
        )
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_broker, victim)
        kills = 0
        for process in rng.sample(sc.consumers[:REPLICAS], 2):
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            process.name = f"victim-{process.name}"
            process.kill()
            kills += 1
            sc.spawn(f"replacement-{kills}")
        await asyncio.sleep(15)
        await asyncio.to_thread(cluster.start_broker, victim)
        back_at = time.monotonic()
        await traffic
        _expected, report = await sc.converge()
    stall, recover = probe.fault_stall(killed_at, back_at)
    _finish(
        "consumers_killed_during_leader_move",
        sc,
        probe,
        report,
        killed_broker=victim,
        consumer_kills=kills,
        fault_stall_s=stall,
        recover_s=recover,
    )
