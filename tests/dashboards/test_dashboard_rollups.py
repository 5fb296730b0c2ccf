"""Rollups equal what the raw runs and scores say, survive re-runs, and pick up late rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dashkit import SICK, seed
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage.rollups import RollupRefresher, refresh_rollups
from canary.storage.tables import RunRow, ScoreRow

pytestmark = pytest.mark.anyio

RAW_SCORES = """
SELECT target_id, metric, date_trunc(:grain, created_at AT TIME ZONE 'UTC'), count(*),
       count(*) FILTER (WHERE NOT passed)
FROM scores GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLED_SCORES = """
SELECT target_id, metric, {grain} AT TIME ZONE 'UTC', runs, failures
FROM score_rollup_{grain} ORDER BY 1, 2, 3
"""


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(sa.text(sql), params)).all()]


@pytest.mark.parametrize("grain", ["minute", "hour"])
async def test_score_rollups_equal_the_raw_counts(engine: AsyncEngine, grain: str) -> None:
    await seed(engine, datetime.now(UTC).replace(microsecond=0))
    assert await rows(engine, ROLLED_SCORES.format(grain=grain)) == await rows(
        engine, RAW_SCORES, grain=grain
    )


async def test_run_rollups_hold_latency_percentiles_and_the_pool_mix(engine: AsyncEngine) -> None:
    seeded = await seed(engine, datetime.now(UTC).replace(microsecond=0))
    [(runs, errors, p50, p95, top, pools)] = await rows(
        engine,
        "SELECT sum(runs), sum(errors), min(latency_p50_ms), max(latency_p95_ms), max(latency_max_ms),"
        " jsonb_agg(pools) FROM run_rollup_hour WHERE target_id = :t",
        t=seeded.ids[SICK],
    )
    [(raw_runs, raw_top)] = await rows(
        engine, "SELECT count(*), max(latency_ms) FROM runs WHERE target_id = :t", t=seeded.ids[SICK]
    )
    assert (runs, errors) == (raw_runs, 0) and top == raw_top == 900.0
    assert 100 <= p50 <= p95 <= 900
    assert {k for p in pools for k in p} == {"short-context"}


async def test_refreshing_again_changes_nothing(engine: AsyncEngine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await seed(engine, now)
    before = await rows(engine, ROLLED_SCORES.format(grain="minute"))
    written = await refresh_rollups(engine, now - timedelta(hours=2))
    assert written > 0
    assert await rows(engine, ROLLED_SCORES.format(grain="minute")) == before


async def test_the_refresher_counts_rows_stored_after_its_last_step_even_late_ones(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = await seed(engine, now)
    refresher = RollupRefresher()
    await refresher.step(engine, now)  # from the newest rollup minute: nothing new
    late = now - timedelta(hours=3, seconds=20)  # stored now, but started three hours ago
    async with engine.begin() as conn:
        run_id = await conn.scalar(
            sa.insert(RunRow)
            .values(
                pass_id=sa.func.gen_random_uuid(),
                target_id=seeded.ids[SICK],
                probe_pk=sa.select(sa.func.min(RunRow.probe_pk)).scalar_subquery(),
                started_at=late,
                status="error",
                reason="timeout",
                latency_ms=30000.0,
            )
            .returning(RunRow.id)
        )
        await conn.execute(
            sa.insert(ScoreRow).values(
                run_id=run_id,
                target_id=seeded.ids[SICK],
                probe_pk=sa.select(sa.func.min(RunRow.probe_pk)).scalar_subquery(),
                metric="answered",
                passed=False,
                created_at=late,
            )
        )
    await refresher.step(engine, now)
    minute = late.replace(second=0)
    [(runs, failures)] = await rows(
        engine,
        "SELECT runs, failures FROM score_rollup_minute WHERE target_id = :t AND metric = 'answered'"
        " AND minute = :m",
        t=seeded.ids[SICK],
        m=minute,
    )
    assert failures == 1 and runs >= 1
    [(errors,)] = await rows(
        engine,
        "SELECT errors FROM run_rollup_minute WHERE target_id = :t AND minute = :m",
        t=seeded.ids[SICK],
        m=minute,
    )
    assert errors == 1


async def test_the_refresher_on_an_empty_database_does_nothing(engine: AsyncEngine) -> None:
    assert await RollupRefresher().step(engine, datetime.now(UTC)) == 0
