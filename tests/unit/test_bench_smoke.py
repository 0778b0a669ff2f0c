"""The offline-check benchmark still runs end to end (tiny size), so it cannot rot; the
report judges each goal of issue 14 as stated; the runner's stage and preset options."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench.common import Endpoints

from bench import capacity, goals, latency, report, report_ticket_used, run, sweeps

REPO = Path(__file__).resolve().parents[2]


def test_offline_check_bench_runs_and_reports_throughput_and_memory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_offline_check", "--users", "200", "--dir", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.lstrip().startswith("200 users") and "passes/s" in line for line in lines)
    assert any(line.lstrip().startswith("20 users") and "peak RSS" in line for line in lines)
    assert "x the peak RSS" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # the generated files are cleaned up


# -- the report's verdicts and the runner's options (no services needed) ------------------


def _drain(name: str, dist: str, eps: float, **cpu: float) -> dict[str, Any]:
    return {
        "round": 1,
        "distribution": dist,
        "pipeline": name,
        "events": 1000,
        "processed": 1000,
        "seconds": 1000 / eps,
        "events_per_second": eps,
        "capped": False,
        "peak_rss_mb": 60.0,
        "cpu_percent": {"pipeline": 30.0, "store": 40.0, "kafka": 10.0, "machine": 90.0, **cpu},
    }


def _sweep(users: int, fixed_seconds: float, fixed_read: int, full_rss: float) -> dict[str, Any]:
    def one(seconds: float, read: int, rss: float = 50.0) -> dict[str, Any]:
        return {
            "seconds": seconds,
            "documents_read": read,
            "documents_changed": 0,
            "peak_rss_mb": rss,
            "longest_stall_ms": 20.0,
            "stalls_over_100ms": 0,
        }

    return {
        "users": users,
        "due_users": users // 100,
        "fixed_due_users": 100,
        "due": one(1.0, users // 100),
        "full": one(users / 10_000, users, full_rss),
        "due_fixed": one(fixed_seconds, fixed_read),
        "full_over_due": 2.0,
    }


def _results(**over: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {"nproc": 2},
        "ticket_used": {
            "throughput": [
                _drain("service", "uniform", 1200.0),
                _drain("naive", "uniform", 100.0),
                _drain("passthrough", "uniform", 12000.0),
            ],
            "latency": [],
            "latency_peak_rss_mb": {"service": 70.0},
            "summary": {
                "events_per_second": {
                    "uniform": {"service": 1200.0, "naive": 100.0, "passthrough": 12000.0}
                },
                "ratios": {"uniform": {"service/naive": 12.0, "service/passthrough": 0.1}},
            },
        },
        "sweeps": [_sweep(10_000, 0.1, 100, 60.0), _sweep(1_000_000, 0.15, 100, 60.0)],
    }
    results.update(over)
    return results


def _by_figure(results: dict[str, Any]) -> dict[str, goals.Goal]:
    return {g.figure: g for g in goals.goals(results)}


def test_goals_met_and_missed_are_judged_against_the_issue_figures() -> None:
    got = _by_figure(_results())

    assert got["service / naive throughput"].met is True
    # 0.1x passthrough and no profile: missed, and the drain's CPU says why
    passthrough = got["service / passthrough"]
    assert passthrough.met is False
    assert "store 40 %" in passthrough.bound
    assert got["due sweep with a fixed number of users due, 10k → 1M users"].met is True
    assert got["due sweep vs full check at 1M users"].met is True  # 100 s vs 0.15 s
    assert got["full check at 1M users"].met is True
    assert got["consumer RSS under load"].met is True
    assert got["p99 latency, event to status change, at 1,000 events/s"].met is None


def test_passthrough_goal_met_by_a_profile_showing_the_store_bound() -> None:
    profile = {
        "summary": {"waiting_share": 0.9},
        "drain": _drain("service", "uniform", 1200.0, pipeline=20.0, store=150.0),
    }
    passthrough = _by_figure(_results(profile=profile))["service / passthrough"]

    assert passthrough.met is True
    assert passthrough.bound.startswith("met by the profile")
    assert "90 %" in passthrough.measured


def test_missed_sweep_goals_name_their_bound() -> None:
    results = _results(
        sweeps=[_sweep(10_000, 0.1, 100, 60.0), _sweep(1_000_000, 5.0, 500_100, 900.0)]
    )
    got = _by_figure(results)

    growth = got["due sweep with a fixed number of users due, 10k → 1M users"]
    assert growth.met is False
    assert "reads 500,100 documents for 100 due" in growth.bound
    full = got["full check at 1M users"]
    assert full.met is False
    assert "memory grows with the users checked" in full.bound


def test_sweep_goals_at_1m_are_not_judged_on_a_smaller_run() -> None:
    results = _results(sweeps=[_sweep(1_000, 0.1, 100, 60.0), _sweep(10_000, 0.1, 100, 60.0)])
    got = _by_figure(results)

    assert got["due sweep with a fixed number of users due, 10k → 1M users"].met is None
    assert got["due sweep vs full check at 1M users"].met is None
    assert got["full check at 1M users"].met is None
    assert "goal is at 1,000,000" in got["full check at 1M users"].measured


def test_preset_sizes_yield_to_explicit_options() -> None:
    args = run.parse_args(["--preset", "smoke", "--users", "500"])

    assert args.users == 500
    assert args.events == run.PRESETS["smoke"]["events"]
    assert run.parse_args([]).users == 100_000  # the issue's size by default


def test_only_names_known_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.parse_args(["--only", "sweeps,profile"]).only == ("sweeps", "profile")
    with pytest.raises(SystemExit) as exc:
        run.parse_args(["--only", "sweep"])

    assert exc.value.code == 2
    assert "unknown stage 'sweep'" in capsys.readouterr().err


def test_resume_keeps_the_previous_figures_and_a_full_run_does_not(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    output.write_bytes(orjson.dumps({"sweeps": [{"users": 10}], "stages": {}}))

    resumed = run._previous(run.parse_args(["--resume", "--output", str(output)]))
    only = run._previous(run.parse_args(["--only", "profile", "--output", str(output)]))
    fresh = run._previous(run.parse_args(["--output", str(output)]))

    assert resumed["sweeps"] == [{"users": 10}]
    assert only["sweeps"] == [{"users": 10}]
    assert fresh == {}


def _linear_world() -> dict[str, Any]:
    """A run in which every cost is exactly linear: the model must reproduce it."""
    results = _results()
    sweeps = []
    for users in (10_000, 100_000, 1_000_000):
        row = _sweep(users, 0.05 + 100 * 0.002, 100, 60.0)
        row["due"]["seconds"] = 0.05 + (users // 100) * 0.002
        row["full"]["seconds"] = users / 20_000
        row["full"]["cpu_seconds"] = users / 25_000
        sweeps.append(row)
    results["sweeps"] = sweeps
    # uniform: 1,200 events/s with 40 % of a core in the store, one document read and one
    # rewritten per event: 1/3 ms of store CPU per event, which store_ops' per-document
    # costs (0.1 ms read + 0.2333 ms write) account for exactly
    uniform = results["ticket_used"]["throughput"][0]
    uniform.update(documents_read_per_event=1.0, documents_written_per_event=1.0)
    results["ticket_used"]["per_document"] = [
        {"read_store_cpu_ms_per_document": 0.1, "write_store_cpu_ms_per_document": 0.7 / 3}
    ]
    # Zipf: half the documents per event, so half the store CPU per event; the consumer's
    # and Kafka's CPU per event as in the uniform drain
    zipf = _drain("service", "zipf", 1200.0, pipeline=30.0, store=20.0, kafka=10.0)
    zipf.update(documents_read_per_event=0.5, documents_written_per_event=0.5)
    results["ticket_used"]["throughput"].append(zipf)
    return results


def test_capacity_model_reproduces_a_linear_world() -> None:
    results = _linear_world()
    m = capacity.measured(results, "synthetic")

    assert m.due_seconds_per_user == pytest.approx(0.002)
    assert m.due_query_seconds == pytest.approx(0.05)
    got = capacity.points(results, m)
    assert [p.name for p in got if not p.reproduced] == []
    assert len(got) == 6
    assert capacity.local_store_fit(m) == pytest.approx(1.0)
    by_name = {p.name: p for p in got}
    assert by_name["service throughput, Zipf drain"].error == pytest.approx(0.0, abs=1e-9)
    assert by_name["store CPU per event, uniform drain"].error == pytest.approx(0.0, abs=1e-9)


def test_capacity_model_says_when_the_store_costs_more_than_its_documents() -> None:
    results = _linear_world()
    # the same documents per event, but the store spent twice their read + write cost
    results["ticket_used"]["throughput"][0]["cpu_percent"]["store"] = 80.0
    m = capacity.measured(results, "synthetic")

    got = {p.name: p for p in capacity.points(results, m)}
    assert capacity.local_store_fit(m) == pytest.approx(2.0)
    assert got["store CPU per event, uniform drain"].error == pytest.approx(-0.5)
    assert not got["store CPU per event, uniform drain"].reproduced


def test_capacity_model_refuses_a_run_that_did_not_count_documents() -> None:
    results = _linear_world()
    del results["ticket_used"]["throughput"][0]["documents_read_per_event"]

    with pytest.raises(ValueError, match="did not count documents read"):
        capacity.measured(results, "synthetic")


def test_capacity_plans_grow_with_load_and_data() -> None:
    m = capacity.measured(_linear_world(), "synthetic")
    a = capacity.Assumptions()
    small, busy = capacity.plan(1_000_000, 1_000, m, a), capacity.plan(1_000_000, 100_000, m, a)
    huge = capacity.plan(100_000_000, 1_000, m, a)

    assert busy.replicas > small.replicas
    assert busy.partitions >= busy.replicas
    assert busy.partitions % 6 == 0
    assert huge.data_gb == pytest.approx(100 * small.data_gb, rel=0.05)
    assert huge.tick_shards >= small.tick_shards
    assert huge.full_check_hours == pytest.approx(100_000_000 / 20_000 / 3600, rel=0.01)


def test_a_full_check_that_failed_at_1m_misses_its_goals_and_says_why() -> None:
    big = _sweep(1_000_000, 0.15, 100, 60.0)
    big["full"] = {"error": "all_users failed: timed out", "seconds": math.nan}
    got = _by_figure(_results(sweeps=[_sweep(10_000, 0.1, 100, 60.0), big]))

    for figure in ("due sweep vs full check at 1M users", "full check at 1M users"):
        assert got[figure].met is False
        assert "timed out" in got[figure].measured
        assert "sorts the whole collection" in got[figure].bound


async def test_sweeps_skip_the_full_check_after_it_failed_at_a_smaller_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[int, str | None]] = []

    async def fake_size(
        _ep: Any, users: int, _say: Any, skip_full: str | None = None
    ) -> dict[str, Any]:
        asked.append((users, skip_full))
        full = {"error": "timed out", "seconds": math.nan} if users >= 100 else {"seconds": 1.0}
        return {"users": users, "full": full}

    monkeypatch.setattr(sweeps, "run_size", fake_size)
    saved: list[list[int]] = []
    rows = await sweeps.run(
        Endpoints("k", "m"),
        [10, 100, 1000],
        say=lambda _line: None,
        done=[{"users": 10, "full": {"seconds": 2.0}}],
        save=lambda r: saved.append([x["users"] for x in r]),
    )

    assert [r["users"] for r in rows] == [10, 100, 1000]
    assert asked[0] == (100, None)  # 10 was kept from the previous run
    assert asked[1][0] == 1000
    assert asked[1][1] is not None
    assert "failed at 100 users" in asked[1][1]
    assert saved == [[10, 100], [10, 100, 1000]]


def test_a_due_sweep_that_failed_misses_the_growth_goal_and_says_why() -> None:
    big = _sweep(100_000, 0.15, 100, 60.0)
    big["due_fixed"] = {"error": "due_users failed: timed out", "seconds": math.nan}
    got = _by_figure(_results(sweeps=[_sweep(10_000, 0.1, 100, 60.0), big]))

    growth = got["due sweep with a fixed number of users due, 10k → 1M users"]
    assert growth.met is False
    assert "failed at 100,000 users" in growth.measured
    assert "reads beyond the due range" in growth.bound
    assert got["due sweep vs full check at 1M users"].met is False


def test_a_full_check_skipped_after_failing_is_judged_where_it_failed() -> None:
    failed = _sweep(100_000, 0.15, 100, 60.0)
    failed["full"] = {"error": "all_users failed: timed out", "seconds": math.nan}
    skipped = _sweep(1_000_000, 0.15, 100, 60.0)
    skipped["full"] = {"error": "not run", "skipped": True, "seconds": math.nan}
    got = _by_figure(_results(sweeps=[_sweep(10_000, 0.1, 100, 60.0), failed, skipped]))

    full = got["full check at 1M users"]
    assert full.met is False
    assert "did not complete at 100,000 users" in full.measured


def test_latency_goal_is_missed_when_the_service_saturates_below_1000_per_second() -> None:
    results = _results()
    results["ticket_used"]["latency"] = [
        {
            "pipeline": "service",
            "offered_rate": 500,
            "achieved_rate": 500.0,
            "sent": 5000,
            "received": 4000,
            "drained": False,
            "p50_ms": 9000.0,
            "p95_ms": 20000.0,
            "p99_ms": 30000.0,
            "max_ms": 31000.0,
        }
    ]
    latency = _by_figure(results)["p99 latency, event to status change, at 1,000 events/s"]

    assert latency.met is False
    assert "saturated at 500/s" in latency.measured
    assert "drains at most 1,200 events/s" in latency.bound


# -- issue 20: latency against capacity and the cost of one event -------------------------


def _point(pipeline: str, fraction: float, p50: float, p99: float, **over: Any) -> dict[str, Any]:
    return {
        "round": 1,
        "pipeline": pipeline,
        "offered_rate": latency.offered_rate(fraction, 1200.0),
        "achieved_rate": fraction * 1200.0,
        "sent": 100,
        "received": 100,
        "drained": True,
        "p50_ms": p50,
        "p95_ms": p99,
        "p99_ms": p99,
        "max_ms": p99,
        "kind": "fraction",
        "fraction": fraction,
        "sustained_rate": 1200.0,
        "lag_growth_per_second": 0.0,
        "peak_rss_mb": 60.0,
        "cpu_percent": {"pipeline": 20.0, "store": 95.0, "kafka": 5.0, "machine": 130.0},
        **over,
    }


def _costly() -> dict[str, Any]:
    """A run whose service drain measured every per-event figure (issue 20)."""
    results = _results()
    results["ticket_used"]["throughput"][0].update(
        {
            "pipeline_cpu_ms_per_event": 0.31,
            "store_cpu_ms_per_event": 4.8,
            "applied_events": 1000,
            "store_cpu_ms_per_applied_event": 4.8,
            "rewrites_per_applied_event": 2.0,
            "user_writes_per_applied_event": 1.0,
            "batches": 2,
            "events_per_batch": 500.0,
            "store_commands_per_batch": 7.0,
            "store_commands": {"find": 2, "getMore": 8, "update": 4},
            "conflicts_per_batch": 0.0,
        }
    )
    results["ticket_used"]["per_document"] = [
        {
            "round": 1,
            "documents": 2000,
            "read_store_cpu_ms_per_document": 1.0,
            "write_store_cpu_ms_per_document": 2.0,
            "read_ms_per_document": 0.4,
            "write_ms_per_document": 2.1,
        }
    ]
    return results


def test_cost_goals_are_judged_and_name_what_bounds_them() -> None:
    got = _by_figure(_costly())

    consumer = got["consumer CPU per event (uniform drain)"]
    assert consumer.met is False
    assert "0.310 ms" in consumer.measured
    store = got["store CPU per applied event (uniform)"]
    assert store.met is False  # 4.8 ms against 1.25 x (1 + 2) ms
    assert "1.60x of 3.00 ms" in store.measured
    assert "1.00 beyond the user's write" in store.bound
    assert "documents read per applied event" not in store.bound  # not counted in this run
    rewrites = got["document rewrites per applied event (uniform)"]
    assert rewrites.met is False
    assert "the outbox clear" in rewrites.bound
    commands = got["store commands per batch (uniform)"]
    assert commands.met is False  # 7 against 4 + 0 conflicts
    assert "getMore round trips: 4.0 per batch" in commands.bound


def test_store_cost_goal_shows_the_documents_the_drain_read_and_rewrote() -> None:
    results = _costly()
    # 1,250 events, of which 1,000 applied; every event's user read, 1.6 rewrites each
    results["ticket_used"]["throughput"][0].update(
        processed=1250, documents_read_per_event=1.0, documents_written_per_event=1.6
    )
    store = _by_figure(results)["store CPU per applied event (uniform)"]

    assert store.met is False
    assert "1.25 documents read per applied event (20 % of the events changed nothing" in (
        store.bound
    )
    # 4.8 ms per event against 1.0 x 1 ms + 1.6 x 2 ms = 4.2 ms
    assert "its store CPU is 1.14x their read + bulk write" in store.bound


def test_cost_goals_met() -> None:
    results = _costly()
    drain = results["ticket_used"]["throughput"][0]
    drain.update(
        {
            "pipeline_cpu_ms_per_event": 0.2,
            "store_cpu_ms_per_applied_event": 3.5,
            "rewrites_per_applied_event": 1.05,
            "user_writes_per_applied_event": 1.0,
            "store_commands_per_batch": 4.5,
            "conflicts_per_batch": 0.5,
        }
    )
    got = _by_figure(results)

    for figure in (
        "consumer CPU per event (uniform drain)",
        "store CPU per applied event (uniform)",
        "document rewrites per applied event (uniform)",
        "store commands per batch (uniform)",
    ):
        assert got[figure].met is True, got[figure]


def test_latency_at_fractions_of_capacity() -> None:
    results = _results()
    results["ticket_used"]["latency"] = [
        _point("service", 0.25, 20.0, 80.0),
        _point("service", 0.5, 30.0, 400.0),
        _point("passthrough", 0.5, 10.0, 30.0),
        _point("service", 0.8, 5000.0, 9000.0, drained=False, lag_growth_per_second=150.0),
    ]
    got = _by_figure(results)

    half = got["latency at 50 % of the sustained throughput"]
    assert half.met is False  # p99 400 ms > 250
    assert "600/s (50 % of 1,200 ev/s" in half.measured
    assert "passthrough p99 30 ms" in half.measured
    assert "CPU during the 50 % point" in half.bound
    most = got["latency at 80 % of the sustained throughput"]
    assert most.met is False
    assert "saturated at 80 %" in most.bound
    assert "the store's CPU" in most.bound


def test_latency_at_80_percent_not_offered_after_50_percent_saturated() -> None:
    results = _results()
    results["ticket_used"]["latency"] = [
        _point("service", 0.5, 3000.0, 9000.0, drained=False),
    ]
    most = _by_figure(results)["latency at 80 % of the sustained throughput"]

    assert most.met is False
    assert "did not drain 50 %" in most.measured


def test_latency_plan_derives_rates_from_the_sustained_throughput() -> None:
    fractions, saturation = latency.plan(333.0, (0.8, 0.25, 0.5), 1000, 10.0, range(1, 100_001))

    assert [p.rate for p in fractions] == [83, 166, 266]  # round(f x 333), lowest first
    assert [p.fraction for p in fractions] == [0.25, 0.5, 0.8]
    assert [len(p.user_ids) for p in fractions] == [830, 1660, 2660]
    assert saturation[0].rate == 1000
    assert saturation[0].kind == "saturation"
    every = [u for p in (*fractions, *saturation) for u in p.user_ids]
    assert len(every) == len(set(every))  # each event a distinct user


def test_latency_plan_offers_for_less_time_when_users_are_short() -> None:
    fractions, saturation = latency.plan(100.0, (0.5,), 100, 10.0, range(1, 751))

    assert [p.rate for p in (*fractions, *saturation)] == [50, 100]
    assert fractions[0].seconds == saturation[0].seconds == 5.0  # 1,500 needed, 750 seeded
    assert sum(len(p.user_ids) for p in (*fractions, *saturation)) == 750


def test_a_results_file_without_the_new_figures_still_renders() -> None:
    old = _results()
    old["ticket_used"]["latency"] = [
        {
            "round": 1,
            "pipeline": "service",
            "offered_rate": 500,
            "achieved_rate": 498.0,
            "sent": 5000,
            "received": 5000,
            "drained": True,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
            "p99_ms": 22.0,
            "max_ms": 23.0,
        }
    ]
    text = "\n".join(report_ticket_used.tables(old["ticket_used"]))
    verdicts = _by_figure(old)

    assert "| service | fixed rate | 500 |" in text
    assert "| uniform | service | not measured |" in text
    assert "Store cost per document" in text
    assert verdicts["consumer CPU per event (uniform drain)"].measured == "not measured"
    assert verdicts["latency at 50 % of the sustained throughput"].met is None


def test_report_names_the_store_and_its_collector_setting() -> None:
    local = {"server": "FerretDB v1.24.2", "uri": "mongodb://h:1", "gogc": "400"}
    assert report.store_line(local) == (
        "Store: FerretDB v1.24.2 at `mongodb://h:1`, its Go collector at `GOGC=400`."
    )
    remote = {"server": "MongoDB 7.0", "uri": "mongodb://h:1", "gogc": None}
    assert report.store_line(remote) == "Store: MongoDB 7.0 at `mongodb://h:1`."
