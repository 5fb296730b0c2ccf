"""Baselines with their whole hours kept between rounds equal the totals read afresh, round after round,
also when a late pass rewrites a kept hour or another writer refreshes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.detection import baselines
from canary.detection.baselines import baseline_sums
from canary.detection.queries import totals
from canary.storage import observations
from tests.seeding import add_passes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 7, 30, tzinfo=UTC)
RATES = {"answered": 0.3, "unexpected_script": 0.1}


async def fresh(
    engine: AsyncEngine, since: datetime, until: datetime
) -> dict[baselines.ProbeKey, tuple[int, int]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(totals(since, until, by_probe=True))).all()
    return {(r.target_id, r.metric, r.probe_pk): (int(r.failing), int(r.observations)) for r in rows}


async def kept(
    engine: AsyncEngine, since: datetime, until: datetime
) -> dict[baselines.ProbeKey, tuple[int, int]]:
    async with engine.connect() as conn:
        return await baseline_sums(conn, since, until)


async def test_kept_hours_equal_fresh_totals_across_rounds(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(7)
    async with engine.begin() as conn:
        cells, probes = await seed_cells(
            conn, ["m/p/a", "m/p/b"], 2, NOW - timedelta(hours=12), NOW, timedelta(minutes=20), RATES, rng
        )
    since, until = NOW - timedelta(hours=9, minutes=10), NOW - timedelta(hours=2, minutes=5)
    hits = []
    for step, minutes in enumerate([0, 1, 2, 60, 61]):
        shift = timedelta(minutes=minutes)
        if step == 2:  # a late pass inside the kept hours
            async with engine.begin() as conn:
                late = NOW - timedelta(hours=5, minutes=3)
                await add_passes(conn, cells["m/p/a"], probes, late, late + timedelta(minutes=1),
                                 timedelta(minutes=20), {"answered": 1.0}, rng)  # fmt: skip
        await observations.refresh(engine)
        before = baselines._KEPT[engine.sync_engine]["baseline"].whole if step else None
        got = await kept(engine, since + shift, until + shift)
        hits.append(before is not None and baselines._KEPT[engine.sync_engine]["baseline"].whole is before)
        assert got == await fresh(engine, since + shift, until + shift)
    # Kept, then re-read when a late pass rewrote one of them, then for a new hour, then kept.
    assert hits == [False, True, False, False, True]
    # Another writer's refresh (its progress, not ours): the kept hours are not trusted.
    await observations.refresh(engine)
    observations.REFRESHED[engine.sync_engine] = observations.Refreshed(
        (0, 0), observations.REFRESHED[engine.sync_engine].left, None
    )
    before = baselines._KEPT[engine.sync_engine]["baseline"].whole
    assert await kept(engine, since + shift, until + shift) == await fresh(
        engine, since + shift, until + shift
    )
    assert baselines._KEPT[engine.sync_engine]["baseline"].whole is not before


async def test_kept_totals_of_a_moving_window_equal_fresh_totals(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(9)
    async with engine.begin() as conn:
        cells, probes = await seed_cells(
            conn, ["m/p/a", "m/p/b"], 2, NOW - timedelta(hours=4), NOW, timedelta(minutes=7), RATES, rng
        )
    now = NOW
    for step in range(6):
        if step:
            async with engine.begin() as conn:
                for tid in cells.values():
                    await add_passes(
                        conn, tid, probes, now, now + timedelta(minutes=7), timedelta(minutes=7), RATES, rng
                    )
                if step == 3:  # a late repeat in the window's first, partial hour
                    late = now - timedelta(hours=1, minutes=58)
                    await add_passes(conn, cells["m/p/b"], probes, late, late + timedelta(minutes=1),
                                     timedelta(minutes=7), {"answered": 1.0}, rng)  # fmt: skip
            now += timedelta(minutes=7)
        await observations.refresh(engine)
        since = now - timedelta(hours=2)
        async with engine.connect() as conn:
            got = await baselines.kept_totals(conn, "peers", since, now)
            rows = (await conn.execute(totals(since, now, by_probe=True))).all()
        assert got == {
            (r.target_id, r.metric, r.probe_pk): (
                int(r.observations),
                int(r.failing),
                int(r.n),
                int(r.failures),
            )
            for r in rows
        }
