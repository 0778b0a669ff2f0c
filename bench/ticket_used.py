"""Ticket-used benchmark: throughput at saturation, then latency against that capacity.

Three pipelines: ``service`` (``python -m consumer run``, under :mod:`bench.counted`),
``naive`` and ``passthrough`` (:mod:`bench.baselines`); the service's pipelines run first.
Each pipeline of a round gets a freshly seeded database of ``users`` users with 3 USABLE
passes each:

- throughput (:mod:`bench.drain`), one drain per distribution: ``events`` ticket-used
  events are produced first (to one topic per round and distribution, read by each
  pipeline with its own group); distribution ``uniform`` uses pass 0 of a uniformly drawn
  user, ``zipf`` pass 1 of a Zipf(s)-drawn user. With it, the per-event figures: CPU of
  the pipeline and the store, documents rewritten, store commands and conflicts per batch.
- per-document cost (:func:`bench.store_ops.per_document`): on the service's database,
  after its drains, a batched read and a bulk write of documents the uniform drain wrote.
- latency (:mod:`bench.latency`), service and passthrough: the service's sustained
  throughput (its uniform drain's events/s) times each of ``latency_fractions``, at the same
  absolute rates for both, then the fixed ``saturation_rate``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench import latency, store_ops
from bench.common import (
    Endpoints,
    create_topics,
    delete_topics,
    drop_database,
    produce_all,
    python_module,
    seed_users,
    unique_prefix,
)
from bench.drain import Drain, drain, event
from bench.latency import Latency

PIPELINES = ("service", "naive", "passthrough")
DISTRIBUTIONS = ("uniform", "zipf")
FRACTIONS = (0.25, 0.5, 0.8)
PER_DOCUMENT = 2_000  # documents of the uniform drain whose read and write are timed


@dataclass(frozen=True, slots=True)
class Config:
    users: int = 100_000
    events: int = 200_000
    distributions: tuple[str, ...] = DISTRIBUTIONS
    zipf_s: float = 1.1
    latency_fractions: tuple[float, ...] = FRACTIONS
    saturation_rate: int = 1000
    rate_seconds: float = 10.0
    rounds: int = 1
    partitions: int = 6
    max_drain_seconds: float = 180.0
    latency_drain_seconds: float = 30.0
    pipelines: tuple[str, ...] = PIPELINES
    seed: int = 7


def draw_users(
    distribution: str, users: int, count: int, rng: random.Random, s: float
) -> list[int]:
    if distribution == "uniform":
        return [rng.randint(1, users) for _ in range(count)]
    cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, users + 1)))
    # Rank k is a random user id, so hot users are spread over partitions.
    ids = list(range(1, users + 1))
    rng.shuffle(ids)
    return [ids[k] for k in rng.choices(range(users), cum_weights=cum, k=count)]


def _ordered(pipelines: Sequence[str]) -> list[str]:
    """The service's pipelines first: the others' latency rates derive from its drain."""
    return sorted(pipelines, key=lambda p: not p.startswith("service"))


def sustained_of(drains: Sequence[Drain], rnd: int) -> tuple[str, float] | None:
    """(distribution, events/s) of the round's first service drain, uniform preferred."""
    mine = [d for d in drains if d.round == rnd and d.pipeline.startswith("service")]
    mine.sort(key=lambda d: d.distribution != "uniform")
    return (mine[0].distribution, mine[0].events_per_second) if mine else None


class _Round:
    """What one round produced and measured so far."""

    def __init__(self, ep: Endpoints, cfg: Config, rnd: int, say: Any) -> None:
        self.ep, self.cfg, self.rnd, self.say = ep, cfg, rnd, say
        self.topics: dict[str, str] = {}
        self.drawn: dict[str, list[int]] = {}
        self.latency_ids: list[int] = []
        self.drains: list[Drain] = []
        self.latencies: list[Latency] = []
        self.per_document: dict[str, Any] | None = None
        self.sustained: tuple[str, float] | None = None
        self.points: tuple[list[latency.Point], list[latency.Point]] | None = None

    async def produce(self, rng: random.Random) -> None:
        cfg = self.cfg
        for index, dist in enumerate(cfg.distributions):
            topic = f"{unique_prefix('in')}.ticket-used"
            await create_topics(self.ep.bootstrap, [topic], cfg.partitions)
            users = draw_users(dist, cfg.users, cfg.events, rng, cfg.zipf_s)
            # uniform: pass 0, zipf: pass 1 (pass 2 is kept fresh for the latency phase)
            secs = await produce_all(self.ep.bootstrap, topic, (event(u, index % 2) for u in users))
            self.say(f"  produced {cfg.events} {dist} events in {secs:.1f}s")
            self.topics[dist], self.drawn[dist] = topic, users
        self.latency_ids = rng.sample(range(1, cfg.users + 1), cfg.users)

    async def pipeline(self, pipeline: str, database: str) -> None:
        cfg = self.cfg
        for dist in cfg.distributions:
            d = await drain(
                *(self.ep, self.rnd, dist, pipeline, database, self.topics[dist]),
                events=cfg.events,
                partitions=cfg.partitions,
                max_seconds=cfg.max_drain_seconds,
            )
            self.drains.append(d)
            self.say(f"  round {self.rnd} {dist:8} {pipeline:12} {_show(d)}")
        if pipeline.startswith("service") and self.per_document is None:
            written = list(dict.fromkeys(self.drawn[cfg.distributions[0]]))[:PER_DOCUMENT]
            self.per_document = await store_ops.per_document(self.ep, database, written)
            self.say(f"  store per document (read, bulk write): {self.per_document}")
        if pipeline == "naive":
            return
        if self.points is None:
            self.sustained = sustained_of(self.drains, self.rnd)
            if self.sustained is None:
                return  # no service drain: nothing to derive the rates from
            self.points = latency.plan(
                self.sustained[1],
                cfg.latency_fractions,
                cfg.saturation_rate,
                cfg.rate_seconds,
                self.latency_ids,
            )
        for points in self.points:
            rows = await latency.paced(
                *(self.ep, self.rnd, pipeline, database, points),
                partitions=cfg.partitions,
                drain_seconds=cfg.latency_drain_seconds,
                sustained=self.sustained[1] if self.sustained else 0.0,
            )
            for item in rows:
                self.latencies.append(item)
                self.say(f"  round {self.rnd} latency {pipeline:12} {_show_latency(item)}")


async def run(ep: Endpoints, cfg: Config, say: Any = print) -> dict[str, Any]:
    """All rounds; returns the JSON-able results."""
    rng = random.Random(cfg.seed)
    rounds: list[_Round] = []
    seeding: list[dict[str, Any]] = []
    for rnd in range(1, cfg.rounds + 1):
        this = _Round(ep, cfg, rnd, say)
        rounds.append(this)
        await this.produce(rng)
        for pipeline in _ordered(cfg.pipelines):
            database = unique_prefix(f"db_{pipeline[:4]}")
            try:
                if pipeline != "passthrough":
                    seeded = await seed_users(ep.mongodb_uri, database, cfg.users)
                    seeding.append({"pipeline": pipeline, **seeded.as_dict()})
                    say(f"  seeded {cfg.users} users for {pipeline}: {seeded.as_dict()}")
                await this.pipeline(pipeline, database)
            finally:
                if pipeline != "passthrough":
                    await drop_database(ep.mongodb_uri, database)
        await delete_topics(ep.bootstrap, list(this.topics.values()))
    drains = [d for r in rounds for d in r.drains]
    latencies = [x for r in rounds for x in r.latencies]
    latency_rss: dict[str, float] = {}
    for x in latencies:
        latency_rss[x.pipeline] = max(x.peak_rss_mb or 0.0, latency_rss.get(x.pipeline, 0.0))
    return {
        "config": asdict(cfg),
        "throughput": [asdict(d) for d in drains],
        "latency": [asdict(item) for item in latencies],
        "latency_peak_rss_mb": latency_rss,
        "sustained": [
            {"round": r.rnd, "distribution": r.sustained[0], "events_per_second": r.sustained[1]}
            for r in rounds
            if r.sustained
        ],
        "per_document": [{"round": r.rnd, **r.per_document} for r in rounds if r.per_document],
        "seeding": seeding,
        "summary": summarize(drains, latencies),
    }


async def profile(ep: Endpoints, cfg: Config, output: str, say: Any = print) -> Drain:
    """One service drain (uniform) under pyinstrument; the text profile goes to ``output``."""
    rng = random.Random(cfg.seed)
    topic = f"{unique_prefix('in')}.ticket-used"
    await create_topics(ep.bootstrap, [topic], cfg.partitions)
    users = draw_users("uniform", cfg.users, cfg.events, rng, cfg.zipf_s)
    await produce_all(ep.bootstrap, topic, (event(u, 0) for u in users))
    database = unique_prefix("db_prof")
    argv = python_module("pyinstrument", "-r", "text", "-o", output, "-m", "consumer", "run")
    try:
        await seed_users(ep.mongodb_uri, database, cfg.users)
        d = await drain(
            *(ep, 0, "uniform", "service", database, topic),
            events=cfg.events,
            partitions=cfg.partitions,
            max_seconds=cfg.max_drain_seconds,
            argv=argv,
        )
    finally:
        await drop_database(ep.mongodb_uri, database)
        await delete_topics(ep.bootstrap, [topic])
    say(f"  profiled service drain: {_show(d)}")
    return d


def _show_latency(item: Latency) -> str:
    point = f"{100 * item.fraction:.0f} %" if item.fraction is not None else item.kind
    return (
        f"{point:>10} {item.offered_rate:5}/s: p50 {item.p50_ms:.0f} p95 {item.p95_ms:.0f} "
        f"p99 {item.p99_ms:.0f} ms, lag growth {item.lag_growth_per_second}/s "
        f"({item.received}/{item.sent}{'' if item.drained else ', saturated'})"
    )


def _show(d: Drain) -> str:
    cpu = " ".join(f"{k} {v:.0f}%" for k, v in d.cpu_percent.items())
    capped = f", {d.transient_faults} transient faults" if d.transient_faults else ""
    capped += f" (capped: {d.processed} of {d.events})" if d.capped else ""
    return (
        f"{d.events_per_second:8.0f} ev/s in {d.seconds:6.1f}s, "
        f"RSS {d.peak_rss_mb:.0f} MB, CPU {cpu}{capped}"
    )


def _best(drains: Sequence[Drain], pipeline: str, dist: str) -> float:
    rates = [
        d.events_per_second for d in drains if d.pipeline == pipeline and d.distribution == dist
    ]
    return sorted(rates)[len(rates) // 2] if rates else float("nan")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or not b:
        return None
    return round(a / b, 3)


def summarize(drains: Sequence[Drain], latencies: Sequence[Latency]) -> dict[str, Any]:
    """Median events/s per pipeline and distribution, and the ratios of the goals."""
    out: dict[str, Any] = {"events_per_second": {}, "ratios": {}}
    for dist in sorted({d.distribution for d in drains}):
        rates = {p: _best(drains, p, dist) for p in sorted({d.pipeline for d in drains})}
        out["events_per_second"][dist] = rates
        out["ratios"][dist] = {
            f"{p}/{base}": _ratio(rates.get(p), rates.get(base))
            for p in rates
            if p.startswith("service")
            for base in ("naive", "passthrough")
        }
    service_rss = [d.peak_rss_mb for d in drains if d.pipeline == "service"]
    out["service_peak_rss_mb"] = max(service_rss) if service_rss else None
    p99 = [
        x.p99_ms
        for x in latencies
        if x.pipeline == "service" and x.kind == "saturation" and x.offered_rate == 1000
    ]
    out["service_p99_ms_at_1000"] = max(p99) if p99 else None
    return out
