"""Seed cells, probes, runs and scores straight into a test database (detection and alert tests)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.storage.tables import ProbeRow, RunRow, ScoreRow, TargetRow

Rate = float | Callable[[datetime], float]
FAILING_TEXT = "The capital of France is Paris สวัสดี and that is all."


async def add_cells(conn: AsyncConnection, cells: list[str]) -> dict[str, int]:
    """Insert ``model/platform/pool`` cells; returns cell -> target id."""
    rows = []
    for cell in cells:
        model, platform, pool = cell.split("/")
        rows.append(
            {
                "cell": cell,
                "model": model,
                "platform": platform,
                "pool": pool,
                "provider": "openai-chat",
                "base_url": "http://127.0.0.1:9",
                "model_id": model,
            }
        )
    result = await conn.execute(sa.insert(TargetRow).returning(TargetRow.cell, TargetRow.id), rows)
    return {cell: tid for cell, tid in result.all()}


async def add_probes(conn: AsyncConnection, count: int) -> list[int]:
    rows = [
        {"probe_id": f"p{i}", "probe_set": "basic", "version": 1, "content_hash": f"h{i}", "spec": {}}
        for i in range(count)
    ]
    return list(
        (
            await conn.execute(sa.insert(ProbeRow).returning(ProbeRow.id, sort_by_parameter_order=True), rows)
        ).scalars()
    )


async def add_passes(
    conn: AsyncConnection,
    target_id: int,
    probe_pks: list[int],
    start: datetime,
    end: datetime,
    step: timedelta,
    rates: Mapping[str, Rate],
    rng: np.random.Generator,
    sessions: int = 0,
    session_rates: Mapping[int, float] | None = None,
) -> int:
    """One pass every ``step`` in ``[start, end)``: a run per probe, a score per metric.

    A metric's failure probability is ``rates[metric]`` (a number, or a function of the pass
    time); ``session_rates`` overrides it for given session indexes (sticky failures).
    Returns the number of runs inserted.
    """
    runs: list[dict[str, object]] = []
    outcomes: list[dict[str, bool]] = []
    t = start
    i = 0
    while t < end:
        pass_id = uuid.uuid4()
        for probe in probe_pks:
            session = i % sessions if sessions else None
            i += 1
            failed = {}
            for metric, rate in rates.items():
                p = rate(t) if callable(rate) else rate
                if session is not None and session_rates and session in session_rates:
                    p = session_rates[session]
                failed[metric] = bool(rng.random() < p)
            runs.append(
                {
                    "pass_id": pass_id,
                    "target_id": target_id,
                    "probe_pk": probe,
                    "started_at": t,
                    "status": "ok",
                    "latency_ms": 10.0,
                    "output_text": FAILING_TEXT if any(failed.values()) else "Paris.",
                    "session_key": None if session is None else f"s{session}",
                }
            )
            outcomes.append(failed)
        t += step
    if not runs:
        return 0
    ids = (
        await conn.execute(sa.insert(RunRow).returning(RunRow.id, sort_by_parameter_order=True), runs)
    ).scalars()
    scores = [
        {
            "run_id": run_id,
            "target_id": target_id,
            "probe_pk": run["probe_pk"],
            "metric": metric,
            "passed": not failed,
            "value": None,
            "detail": {},
            "created_at": run["started_at"],
        }
        for run_id, run, out in zip(ids, runs, outcomes, strict=True)
        for metric, failed in out.items()
    ]
    await conn.execute(sa.insert(ScoreRow), scores)
    return len(runs)


async def seed_cells(
    conn: AsyncConnection,
    cells: list[str],
    probe_count: int,
    start: datetime,
    end: datetime,
    step: timedelta,
    rates: Mapping[str, Rate],
    rng: np.random.Generator,
) -> tuple[dict[str, int], list[int]]:
    """``cells`` and ``probe_count`` probes, each cell with a pass every ``step`` in ``[start, end)``.

    Returns (cell -> target id, probe pks).
    """
    ids = await add_cells(conn, cells)
    probes = await add_probes(conn, probe_count)
    for tid in ids.values():
        await add_passes(conn, tid, probes, start, end, step, rates, rng)
    return ids, probes
