"""Prove nothing is lost: each scenario runs continuous traffic (thousands of ticket-used
events over hundreds of users, due ticks, a full tick) against consumer processes while a
fault strikes, then compares MongoDB and the output topic with an independent model
(tests/faults/checker.py). Each must end with lost = 0 and wrong = 0.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.checker import Report
from tests.faults.scenario import (
    ForeignWriter,
    Scenario,
    committed_offsets,
    deployment,
    local_server,
    record_figures,
)
from tests.integration.harness import ConsumerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]


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
    sc.traffic_seconds = 60
    await sc.seed_documents()
    rng = random.Random(sc.seed)
    sc.consumer("steady").start()
    traffic = sc.start_traffic()
    kills = 0
    victim: ConsumerProcess | None = None
    while not traffic.done() or kills < 20:
        victim = sc.consumer(f"victim-{kills}")
        victim.start(wait_assigned=False)
        await asyncio.sleep(rng.uniform(0.2, 4.0))
        victim.kill()
        kills += 1
        if kills % 5 == 0:
            # Now and then kill the steady one as well, so no replica lives throughout.
            steady = next(p for p in reversed(sc.consumers) if p.name.startswith("steady"))
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            steady.kill()
            kills += 1
            sc.consumer(f"steady-{kills}").start(wait_assigned=False)
    await traffic
    _expected, report = await sc.converge()
    _finish("sigkill", sc, report, kills=kills)
    assert kills >= 20
