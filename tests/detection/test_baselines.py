"""Baselines with their whole hours kept between rounds equal the totals read afresh, round after round,
also when a late pass rewrites a kept hour or another writer refreshes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
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


def hour_reads(engine: AsyncEngine) -> list[tuple[int, int]]:
    """The whole-hour ranges read from ``observation_rollup_hour`` from now on, as hours of NOW's day."""
    reads: list[tuple[int, int]] = []

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM observation_rollup_hour" in statement:
            reads.append((params["hour_1"].hour, params["hour_2"].hour))

    return reads


SINCE, UNTIL = NOW - timedelta(hours=9, minutes=10), NOW - timedelta(hours=2, minutes=5)  # hours 03-10


async def twelve_hours(engine: AsyncEngine, rng: np.random.Generator) -> tuple[dict[str, int], list[int]]:
    """Two cells, two probes, a pass every 20 minutes over the 12 hours before NOW."""
    async with engine.begin() as conn:
        return await seed_cells(
            conn, ["m/p/a", "m/p/b"], 2, NOW - timedelta(hours=12), NOW, timedelta(minutes=20), RATES, rng
        )


async def test_kept_hours_equal_fresh_totals_across_rounds(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(7)
    cells, probes = await twelve_hours(engine, rng)
    reads = hour_reads(engine)
    read_per_step = []
    for step, minutes in enumerate([0, 1, 2, 60, 61]):
        shift = timedelta(minutes=minutes)
        if step == 2:  # a late pass inside the kept hours
            async with engine.begin() as conn:
                late = NOW - timedelta(hours=5, minutes=3)
                await add_passes(conn, cells["m/p/a"], probes, late, late + timedelta(minutes=1),
                                 timedelta(minutes=20), {"answered": 1.0}, rng)  # fmt: skip
        await observations.refresh(engine)
        reads.clear()
        got = await kept(engine, SINCE + shift, UNTIL + shift)
        read_per_step.append(list(reads))
        assert got == await fresh(engine, SINCE + shift, UNTIL + shift)
    # The hours 03-10 (the last, 09-10, apart): read; kept; the older ones read again when a late
    # pass rewrote one of them; at a new hour (04-11) moved by the hour that left (03) and the one
    # that joined (09), and the new last hour read; kept.
    assert read_per_step == [[(3, 9), (9, 10)], [], [(3, 9)], [(3, 4), (9, 10), (10, 11)], []]
    # Another writer's refresh (its progress, not ours): the kept hours are not trusted.
    await observations.refresh(engine)
    observations.REFRESHED[engine.sync_engine] = observations.Refreshed(
        (0, 0), observations.REFRESHED[engine.sync_engine].left, None
    )
    reads.clear()
    got = await kept(engine, SINCE + shift, UNTIL + shift)
    assert reads == [(4, 10), (10, 11)]
    assert got == await fresh(engine, SINCE + shift, UNTIL + shift)


async def test_a_late_pass_in_the_last_hour_rereads_that_hour_alone(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(8)
    cells, probes = await twelve_hours(engine, rng)
    await observations.refresh(engine)
    await kept(engine, SINCE, UNTIL)
    async with engine.begin() as conn:  # inside the last whole hour, 09-10
        late = NOW - timedelta(hours=2, minutes=40)
        await add_passes(conn, cells["m/p/b"], probes, late, late + timedelta(minutes=1),
                         timedelta(minutes=20), {"answered": 1.0}, rng)  # fmt: skip
    await observations.refresh(engine)
    reads = hour_reads(engine)
    got = await kept(engine, SINCE, UNTIL)
    assert reads == [(9, 10)]
    assert got == await fresh(engine, SINCE, UNTIL)


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
