"""Look-back observations kept between rounds equal a full read, round after round: with new passes,
a late repeat inside the kept part, and another writer's refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.detection import lookback
from canary.storage import observations
from tests.seeding import add_passes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 7, 30, tzinfo=UTC)
RATES = {"answered": 0.3, "unexpected_script": 0.1}
STEP = timedelta(minutes=10)
HISTORY = timedelta(hours=6)


Streams = dict[lookback.Key, lookback.Observations]


async def both(engine: AsyncEngine, now: datetime) -> tuple[bool, Streams, Streams]:
    """Whether the kept part was used, what the round got, and a full read."""
    start = now - HISTORY
    async with engine.connect() as conn:
        sync = conn.sync_engine
        kept = lookback._KEPT.get(sync)
        used = (
            kept is not None and lookback._cut(kept, observations.REFRESHED.get(sync), start, now) is not None
        )
        got = await lookback.lookback(conn, start, now)
        full = (await lookback._read_block(conn, start, start, now)).streams()
    return used, got, full


def same(a: Streams, b: Streams) -> bool:
    return a.keys() == b.keys() and all(
        all(np.array_equal(x, y) for x, y in zip(a[k]._arrays(), b[k]._arrays(), strict=True)) for k in a
    )


async def test_kept_lookback_equals_a_full_read_across_rounds(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(17)
    async with engine.begin() as conn:
        cells, probes = await seed_cells(
            conn, ["m/p/a", "m/p/b"], 2, NOW - timedelta(hours=9), NOW, STEP, RATES, rng
        )
    used = []
    now = NOW
    for step in range(5):
        if step:
            async with engine.begin() as conn:  # the passes since the last round
                for tid in cells.values():
                    await add_passes(conn, tid, probes, now, now + STEP, STEP, RATES, rng)
                if step == 2:  # a repeat stored late, early in the kept part of the look-back
                    late = NOW - timedelta(hours=4, minutes=3)
                    await add_passes(conn, cells["m/p/a"], probes, late, late + timedelta(minutes=1), STEP,
                                     {"answered": 1.0}, rng)  # fmt: skip
            now += STEP
        await observations.refresh(engine)
        if step == 4:  # another writer's refresh (its progress, not ours): nothing kept is trusted
            previous = observations.REFRESHED[engine.sync_engine]
            observations.REFRESHED[engine.sync_engine] = observations.Refreshed((0, 0), previous.left, None)
        kept, got, full = await both(engine, now)
        used.append(kept)
        assert same(got, full) and got
    assert used == [False, True, True, True, False]


def test_merged_blocks_keep_each_stream_in_order_and_drop_the_empty() -> None:
    def obs(*at: int) -> lookback.Observations:
        a = np.array(at, dtype=np.int64)
        return lookback.Observations(a, a + 1, a + 2, a + 3, a + 4)

    head = ([(2, "x"), (1, "x")], np.array([0, 0, 1]), obs(10, 11, 20))
    tail = ([(1, "x"), (3, "y")], np.array([0, 1, 1]), obs(21, 30, 31))
    merged = lookback._merge([head, tail])
    assert merged.keys == [(1, "x"), (2, "x"), (3, "y")]
    got = {k: v.at_us.tolist() for k, v in merged.streams().items()}
    assert got == {(1, "x"): [20, 21], (2, "x"): [10, 11], (3, "y"): [30, 31]}
    kept = np.array([True, True, False, False, True, True])  # (2, "x") left the look-back
    inner = lookback._Block(merged.keys, merged.owner[kept], obs(*merged.all.at_us[kept].tolist()))
    assert list(lookback._without_empty(inner).streams()) == [(1, "x"), (3, "y")]
