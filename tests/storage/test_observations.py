"""Detection's observation counts: an incremental refresh equals regrouping every raw row, a repeat
stored late moves its observation instead of doubling it, and the hourly totals add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.detection.queries import totals
from canary.storage import observations
from canary.storage.tables import RunRow, ScoreRow
from tests.seeding import add_passes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
RATES = {"answered": 0.3, "unexpected_script": 0.1}
STORED = "SELECT target_id, metric, probe_pk, pass_id, n, failures, at FROM observations"


async def stored(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return {tuple(r) for r in (await conn.execute(sa.text(STORED))).all()}


async def regrouped(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    """Every raw row grouped at once, as the round of a fresh database would."""
    lo, hi = NOW - timedelta(days=30), NOW + timedelta(days=1)
    async with engine.connect() as conn:
        rows = (await conn.execute(observations.clusters(lo, hi))).all()
    return {(t, m, p, pid, n, f, at) for t, m, p, pid, n, f, at in rows}


async def test_incremental_refresh_equals_regrouping_and_a_late_repeat_moves_its_observation(
    engine: AsyncEngine,
) -> None:
    rng = np.random.default_rng(3)
    async with engine.begin() as conn:
        cells, probes = await seed_cells(
            conn,
            ["m/p/a", "m/p/b"],
            3,
            NOW - timedelta(hours=30),
            NOW - timedelta(hours=2),
            timedelta(minutes=10),
            RATES,
            rng,
        )
    assert await observations.refresh(engine) > 0
    first = await stored(engine)
    assert first == await regrouped(engine)
    async with engine.begin() as conn:
        for tid in cells.values():
            await add_passes(
                conn, tid, probes, NOW - timedelta(hours=2), NOW, timedelta(minutes=10), RATES, rng
            )
        # One more repeat of an existing pass, started a minute before the pass's first run.
        pass_id, tid, probe, at = (
            await conn.execute(
                sa.text("SELECT pass_id, target_id, probe_pk, started_at FROM runs ORDER BY id DESC")
            )
        ).first()  # type: ignore[misc]
        early = at - timedelta(minutes=1)
        run_id = await conn.scalar(
            sa.insert(RunRow)
            .values(
                pass_id=pass_id, target_id=tid, probe_pk=probe, started_at=early, status="ok", latency_ms=1.0
            )
            .returning(RunRow.id)
        )
        await conn.execute(
            sa.insert(ScoreRow).values(
                run_id=run_id,
                target_id=tid,
                probe_pk=probe,
                metric="answered",
                passed=False,
                created_at=early,
            )
        )
    await observations.refresh(engine)
    second = await stored(engine)
    assert second == await regrouped(engine) and len(second) > len(first)
    moved = [r for r in second if r[3] == pass_id and r[1] == "answered" and r[2] == probe]
    assert len(moved) == 1 and moved[0][6] == early and moved[0][4] == 2
    await observations.refresh(engine)  # idempotent: nothing new, nothing changes
    assert await stored(engine) == second
    # Totals over a range that starts and ends inside hours: hours plus the partial ends.
    since, until = NOW - timedelta(hours=20, minutes=25), NOW - timedelta(minutes=35)
    async with engine.connect() as conn:
        summed = {
            (r.target_id, r.metric, r.probe_pk): (r.observations, r.failing, r.n, r.failures)
            for r in (await conn.execute(totals(since, until, by_probe=True))).all()
        }
    expected: dict[tuple[int, str, int], list[int]] = {}
    for t, m, p, _, n, f, at in second:
        if since < at <= until:
            acc = expected.setdefault((t, m, p), [0, 0, 0, 0])
            acc[0], acc[1], acc[2], acc[3] = acc[0] + 1, acc[1] + int(f > 0), acc[2] + n, acc[3] + f
    assert summed == {k: tuple(v) for k, v in expected.items()}
