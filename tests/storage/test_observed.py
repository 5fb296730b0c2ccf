"""Reading observations as of now: the same rows whether the table was never refreshed, is up to
date, or lags the raw rows (the part stored since the last refresh comes from them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage import observations
from canary.storage.observed import ALL, NONE, observed, settled_before
from tests.seeding import add_passes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
RATES = {"answered": 0.3, "unexpected_script": 0.1}
SINCE, UNTIL = NOW - timedelta(hours=5), NOW + timedelta(hours=1)


async def read(engine: AsyncEngine, cells: list[str] | None = None) -> tuple[datetime, set[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        settled = await settled_before(conn)
        rows = (await conn.execute(observed(settled, SINCE, UNTIL, cells))).all()
    return settled, {tuple(r) for r in rows}


async def truth(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    """What a refresh followed by a read of the table gives."""
    await observations.refresh(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(observed(ALL, SINCE, UNTIL))).all()
    return {tuple(r) for r in rows}


async def test_observed_rows_are_the_refreshed_ones_in_every_state_of_the_table(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(5)
    async with engine.begin() as conn:
        cells, probes = await seed_cells(
            conn,
            ["m/p/a", "m/p/b"],
            2,
            NOW - timedelta(hours=6),
            NOW - timedelta(hours=2),
            timedelta(minutes=10),
            RATES,
            rng,
        )
    settled, never = await read(engine)
    assert settled == NONE and never  # never refreshed: all from the raw rows
    expected = await truth(engine)
    settled, fresh = await read(engine)
    assert settled == ALL and fresh == never == expected
    async with engine.begin() as conn:  # two more hours, not refreshed yet
        for tid in cells.values():
            await add_passes(
                conn, tid, probes, NOW - timedelta(hours=2), NOW, timedelta(minutes=10), RATES, rng
            )
    settled, lagging = await read(engine)
    assert NOW - timedelta(hours=3) < settled < NOW - timedelta(hours=2)  # the new rows, less a pass's span
    assert lagging == await truth(engine) and len(lagging) > len(expected)
    _, one_cell = await read(engine, ["m/p/a"])
    assert one_cell == {r for r in lagging if r[0] == cells["m/p/a"]}
