"""The refresh reads what was committed since the last one, in any commit order: rows of a
transaction still open at a refresh (lower ids than rows already read) are counted by the next;
and migration 0009 queues what the id-based refresh of 0008 had not read yet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage import observations
from canary.storage.engine import async_engine, migrate
from canary.storage.tables import ObservationRow
from tests.conftest import database_at
from tests.seeding import add_cells, add_passes, add_probes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
RATES = {"answered": 0.3, "unexpected_script": 0.1}
STORED = "SELECT target_id, metric, probe_pk, pass_id, n, failures, at FROM observations"
STEP = timedelta(minutes=10)
OBSERVATIONS: sa.Table = ObservationRow.__table__  # type: ignore[assignment]


async def stored(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return {tuple(r) for r in (await conn.execute(sa.text(STORED))).all()}


async def regrouped(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        query = observations.clusters(NOW - timedelta(days=3), NOW + timedelta(days=1))
        rows = (await conn.execute(query)).all()
    return {tuple(r) for r in rows}


async def queue_length(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM observation_dirty")) or 0)


async def test_rows_committed_after_a_refresh_with_lower_ids_count_in_the_next(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(11)
    async with engine.begin() as conn:
        cells = await add_cells(conn, ["m/p/a", "m/p/b"])
        probes = await add_probes(conn, 2)
        a = cells["m/p/a"]
        early = NOW - timedelta(hours=6)
        await add_passes(conn, a, probes, early, NOW - timedelta(hours=3), STEP, RATES, rng)
    await observations.refresh(engine)
    assert await queue_length(engine) == 0
    # A slow writer takes its ids first and commits last, after a refresh has read a later writer's.
    slow = await engine.connect()
    slow_tx = await slow.begin()
    await add_passes(
        slow, cells["m/p/b"], probes, NOW - timedelta(hours=3), NOW - timedelta(hours=2), STEP, RATES, rng
    )
    async with engine.begin() as conn:
        await add_passes(conn, cells["m/p/a"], probes, NOW - timedelta(hours=1), NOW, STEP, RATES, rng)
    try:
        await observations.refresh(engine)
    finally:
        await slow_tx.commit()
        await slow.close()
    assert await stored(engine) != await regrouped(engine)  # the slow writer's rows are not counted yet
    assert await queue_length(engine) > 0
    assert await observations.refresh(engine) > 0
    assert await stored(engine) == await regrouped(engine)
    assert await queue_length(engine) == 0
    assert await observations.refresh(engine) == 0  # nothing queued: nothing recomputed


def test_stale_ranges_widen_by_a_pass_span_and_merge_overlaps() -> None:
    span, t = observations.PASS_SPAN, NOW
    later = t + timedelta(hours=2)
    ranges = observations.stale_ranges([(later, later), (t, t), (t + span, t + span)])
    assert ranges == [(t - span, t + 2 * span), (later - span, later + span)]


@pytest.fixture
def db_at_0008(pg_server: str) -> Iterator[str]:
    yield from database_at(pg_server, "0008")


async def test_migration_0009_queues_what_the_id_progress_had_not_read(db_at_0008: str) -> None:
    engine = async_engine(db_at_0008)
    try:
        rng = np.random.default_rng(13)
        async with engine.begin() as conn:
            cells, probes = await seed_cells(
                conn,
                ["m/p/a", "m/p/b"],
                2,
                NOW - timedelta(hours=8),
                NOW - timedelta(hours=2),
                STEP,
                RATES,
                rng,
            )
            # What 0008's refresh left: the observations so far and the highest ids it read.
            lo, hi = NOW - timedelta(days=1), NOW
            columns = ["target_id", "metric", "probe_pk", "pass_id", "n", "failures", "at"]
            await conn.execute(sa.insert(OBSERVATIONS).from_select(columns, observations.clusters(lo, hi)))
            await conn.execute(
                sa.text(
                    "INSERT INTO rollup_progress SELECT 'observations', (SELECT max(id) FROM runs),"
                    " (SELECT max(id) FROM scores)"
                )
            )
            for tid in cells.values():  # stored after that refresh
                await add_passes(conn, tid, probes, NOW - timedelta(hours=2), NOW, STEP, RATES, rng)
        runs, scores = await count(engine, "runs"), await count(engine, "scores")
        migrate(db_at_0008)
        assert (await count(engine, "runs"), await count(engine, "scores")) == (runs, scores)
        assert await queue_length(engine) == 1
        assert await observations.refresh(engine) > 0
        assert await stored(engine) == await regrouped(engine)
    finally:
        await engine.dispose()


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
