"""Many cells given to a replica at once: registered in batches, then probed on a small pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import canary.probing.registration as registration
from canary.config.loader import Target
from canary.config.sections import ScheduleSpec
from canary.probing.cells import CellPool
from canary.probing.scheduler import ProbeScheduler, Shard, plan_jobs
from canary.service.metrics import ServiceMetrics
from canary.storage.backlog import ResultBacklog
from canary.storage.engine import async_engine
from tests.service.conftest import MakeConfig, eventually

pytestmark = pytest.mark.anyio

CELLS = 150  # in chunks of 60 (1,000 in the service) to keep the test short  # two registration chunks


async def test_cells_given_at_once_register_in_chunks_and_all_store_on_a_pool_of_two(
    db_url: str, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[int] = []
    sync_targets = registration.sync_targets

    async def counted(conn: AsyncConnection, targets: Sequence[Target]) -> Any:
        transactions.append(len(targets))
        return await sync_targets(conn, targets)

    monkeypatch.setattr(registration, "sync_targets", counted)
    monkeypatch.setattr(registration, "CHUNK_CELLS", 60)
    config, catalog = make_config({f"c{i}": "ok" for i in range(CELLS)})
    spec = ScheduleSpec(start_spread_s=0)
    metrics = ServiceMetrics()
    engine = async_engine(db_url, pool_size=2)
    backlog = ResultBacklog(engine, None, max_writers=2)
    try:
        async with CellPool() as cells:
            jobs = plan_jobs(config.targets, catalog, Shard(), spec)
            scheduler = ProbeScheduler(engine, cells, jobs, spec, metrics, backlog=backlog)
            scheduler.start()  # every cell's first pass is due now
            try:
                await eventually(lambda: _all_stored(engine), "every cell's first run stored")
            finally:
                await scheduler.shutdown()
    finally:
        await engine.dispose()
    assert transactions == [60, 60, 30]  # one batch, in chunks; every pass found its cell done
    assert backlog.runs == 0 and not backlog.dropped
    assert metrics.registry.get_sample_value("canary_pass_errors_total") is None


async def _all_stored(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT count(*) FROM runs")) == CELLS

