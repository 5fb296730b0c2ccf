"""The scheduler against a real loopback upstream and PostgreSQL: isolation, misfires, shutdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.sections import ScheduleSpec
from canary.probing.cells import CellPool
from canary.probing.equivalence import load_equivalence
from canary.probing.equivalence_runs import scheduled_probes
from canary.probing.scheduler import ProbeScheduler, Shard, plan_jobs
from canary.service.metrics import ServiceMetrics
from tests.service.conftest import MakeConfig, Upstream, count_runs, eventually

pytestmark = pytest.mark.anyio


def value(metrics: ServiceMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def test_a_hanging_cell_does_not_starve_fast_cells(
    engine: AsyncEngine, make_config: MakeConfig, upstream: tuple[Upstream, object]
) -> None:
    up = upstream[0]
    up.gate.clear()
    config, catalog = make_config({"stuck": "hang", "fast1": "ok", "fast2": "ok"}, interval_s=0.2)
    spec = ScheduleSpec(start_spread_s=0, pass_timeout_s=120)
    metrics = ServiceMetrics()
    async with CellPool() as cells:
        scheduler = ProbeScheduler(
            engine, cells, plan_jobs(config.targets, catalog, Shard(), spec), spec, metrics
        )
        scheduler.start()
        try:
            await eventually(lambda: up.waiting >= 1, "the stuck cell's request reached the upstream")
            for cell in ("m/p/fast1", "m/p/fast2"):
                await eventually(lambda c=cell: _at_least(engine, c, 5), f"{cell} kept being probed")
            assert await count_runs(engine, "m/p/stuck") == 0
            # The stuck cell's job is still running, so its later beats were skipped, not stacked up.
            await eventually(
                lambda: value(metrics, "canary_scheduler_overlaps_total") >= 1, "overlap counted"
            )
            assert up.waiting == 1
        finally:
            up.gate.set()
            await scheduler.shutdown(grace_s=30)
    assert await count_runs(engine, "m/p/stuck", "AND r.status = 'ok'") == 1


async def _at_least(engine: AsyncEngine, cell: str, n: int) -> bool:
    return await count_runs(engine, cell) >= n


async def test_runs_missed_beyond_the_grace_time_are_counted_and_not_run_late(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    config, catalog = make_config({"a": "ok", "b": "ok"}, interval_s=3600)
    spec = ScheduleSpec(start_spread_s=0, misfire_grace_s=1)
    metrics = ServiceMetrics()
    async with CellPool() as cells:
        scheduler = ProbeScheduler(
            engine, cells, plan_jobs(config.targets, catalog, Shard(), spec), spec, metrics
        )
        scheduler.start(now=datetime.now(UTC) - timedelta(minutes=10))  # as if the loop had stalled
        try:
            await eventually(
                lambda: value(metrics, "canary_scheduler_missed_runs_total") == 2, "misses counted"
            )
            next_runs = [job.next_run_time for job in scheduler.scheduler.get_jobs()]
            assert all(t > datetime.now(UTC) for t in next_runs)  # rescheduled, not run late
        finally:
            await scheduler.shutdown()
    assert await count_runs(engine, "m/p/a") + await count_runs(engine, "m/p/b") == 0


async def test_shutdown_records_in_flight_requests_as_cancelled(
    engine: AsyncEngine, make_config: MakeConfig, upstream: tuple[Upstream, object]
) -> None:
    up = upstream[0]
    up.gate.clear()
    config, catalog = make_config({"stuck": "hang"}, interval_s=3600, repeat=1)
    spec = ScheduleSpec(start_spread_s=0)
    metrics = ServiceMetrics()
    try:
        async with CellPool() as cells:
            scheduler = ProbeScheduler(
                engine, cells, plan_jobs(config.targets, catalog, Shard(), spec), spec, metrics
            )
            scheduler.start()
            await eventually(lambda: up.waiting >= 1, "request in flight")
            await scheduler.shutdown(grace_s=0.05)
            assert not scheduler.in_flight
    finally:
        up.gate.set()
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT status, reason FROM runs"))).all()
    assert [tuple(r) for r in rows] == [("error", "cancelled")]


async def test_burst_jobs_tag_their_runs_with_the_deploy(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    config, catalog = make_config({"canary": "ok", "other": "ok"}, interval_s=3600)
    spec = ScheduleSpec(start_spread_s=3000, burst_interval_s=0.2)  # regular jobs wait; bursts run now
    metrics = ServiceMetrics()
    async with CellPool() as cells:
        scheduler = ProbeScheduler(
            engine, cells, plan_jobs(config.targets, catalog, Shard(), spec), spec, metrics
        )
        scheduler.start()
        try:
            scheduler.set_bursts({"m/p/canary": "d1"})
            await eventually(lambda: _at_least(engine, "m/p/canary", 3), "burst runs")
            scheduler.set_bursts({})
            assert [j.id for j in scheduler.scheduler.get_jobs() if j.id.startswith("burst::")] == []
        finally:
            await scheduler.shutdown()
    assert await count_runs(engine, "m/p/canary", "AND r.deploy_id = 'd1'") >= 3
    assert await count_runs(engine, "m/p/other") == 0


def test_shards_split_the_cells_without_overlap_or_gaps(make_config: MakeConfig) -> None:
    config, catalog = make_config({f"pool{i}": "ok" for i in range(40)})
    spec = ScheduleSpec()
    shards = [{j.cell for j in plan_jobs(config.targets, catalog, Shard(i, 3), spec)} for i in range(3)]
    assert all(shards)
    assert sum(len(s) for s in shards) == 40
    assert set().union(*shards) == {t.cell for t in config.targets}


def test_a_shard_is_parsed_from_i_slash_n_and_rejects_nonsense() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_equivalence_probes_are_jobs_of_their_own_only_with_an_interval(make_config: MakeConfig) -> None:
    config, catalog = make_config({"a": "ok"})
    probes = scheduled_probes(load_equivalence())
    assert {j.probe_set for j in plan_jobs(config.targets, catalog, Shard(), ScheduleSpec(), probes)} == {
        "basic"
    }
    spec = ScheduleSpec(equivalence_interval_s=900)
    jobs = {j.probe_set: j for j in plan_jobs(config.targets, catalog, Shard(), spec, probes)}
    # openai-chat returns no prompt log-probabilities: greedy and sampled, never forced.
    assert set(jobs) == {"basic", "equivalence.greedy", "equivalence.sampled"}
    assert jobs["equivalence.greedy"].interval_s == 900 and jobs["basic"].interval_s == 3600


async def test_the_service_stores_the_equivalence_runs_at_their_own_interval(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    config, catalog = make_config({"a": "ok"}, interval_s=3600)
    spec = ScheduleSpec(start_spread_s=0, equivalence_interval_s=0.3)
    jobs = plan_jobs(config.targets, catalog, Shard(), spec, scheduled_probes(load_equivalence()))
    greedy = "AND r.probe_pk IN (SELECT id FROM probes WHERE probe_set = 'equivalence.greedy')"
    async with CellPool() as cells:
        scheduler = ProbeScheduler(engine, cells, jobs, spec, ServiceMetrics())
        scheduler.start()
        try:
            prompts = len(load_equivalence().greedy)
            await eventually(
                lambda: _runs_at_least(engine, greedy, 2 * prompts), "two passes of the greedy probes"
            )
        finally:
            await scheduler.shutdown(grace_s=30)
    basic = "AND r.probe_pk IN (SELECT id FROM probes WHERE probe_set = 'basic')"
    assert await count_runs(engine, "m/p/a", basic) == 1  # the cell's own interval: one pass so far


async def _runs_at_least(engine: AsyncEngine, extra: str, n: int) -> bool:
    return await count_runs(engine, "m/p/a", extra + " AND r.status = 'ok'") >= n


async def test_cells_taken_away_lose_their_jobs_and_their_series(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    config, catalog = make_config({f"pool{i}": "ok" for i in range(6)}, interval_s=3600)
    spec = ScheduleSpec(start_spread_s=3000)  # nothing runs: only the jobs and gauges are looked at
    metrics = ServiceMetrics()
    async with CellPool() as cells:
        scheduler = ProbeScheduler(
            engine, cells, plan_jobs(config.targets, catalog, Shard(), spec), spec, metrics
        )
        scheduler.start(cells=set())
        try:
            first = {f"m/p/pool{i}" for i in range(4)}
            scheduler.set_cells(first)
            scheduler.set_cells(first)  # a tick that changes nothing adds and removes nothing
            scheduler.set_cells({"m/p/pool3", "m/p/pool4"})
            jobs = {j.id.split("::")[0] for j in scheduler.scheduler.get_jobs()}
            assert jobs == {"m/p/pool3", "m/p/pool4"}
            series = {s.labels["cell"] for s in metrics.cell_interval.collect()[0].samples}
            assert series == {"m/p/pool3", "m/p/pool4"}
            assert metrics.registry.get_sample_value("canary_scheduler_jobs", {"kind": "regular"}) == 2
        finally:
            await scheduler.shutdown()
