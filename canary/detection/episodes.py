"""Findings as episodes: one row per (cell, metric, kind) incident, updated while it lasts.

:func:`store_episodes` is the only writer of ``findings``. A round's active candidates update
the open row of their (cell, metric, kind) or open a new one; an open row the round no longer
supports is resolved. So a persisting problem is one row whose ``updated_at`` moves, and a
recurrence after resolution is a new row (and a new alert, see :mod:`canary.alerting`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.detection.decisions import Kind
from canary.storage.tables import FindingRow

__all__ = ["Finding", "store_episodes"]


@dataclass(frozen=True)
class Finding:
    """A stored finding: one (cell, metric, kind) episode, as of the round that returned it."""

    target_id: int
    cell: str
    metric: str
    kind: Kind
    baseline_rate: float
    observed_rate: float
    effect: float
    effect_ci_low: float
    effect_ci_high: float
    n_baseline: int
    baseline_failures: int
    n_observed: int
    failures: int
    statistic: float
    threshold: float
    p_value: float
    mde: float | None
    change_point_at: datetime | None
    deploy_ids: list[str]
    sample_output: str | None
    message: str
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    updated_at: datetime | None = None


_KEY = (FindingRow.target_id, FindingRow.metric, FindingRow.kind)


async def store_episodes(conn: AsyncConnection, findings: Sequence[Finding], now: datetime) -> list[Finding]:
    """Write one round's findings as episodes and resolve the open ones it no longer finds.

    1. Lock the open episodes (the partial unique index allows one per key).
    2. An active finding with an open episode updates it (its ``created_at`` stays the start).
    3. An active finding without one inserts a new episode.
    4. Every other open episode gets ``resolved_at = now``.
    Returns the findings with their episode ids and start times.
    """
    rows = await conn.execute(
        sa.select(FindingRow.id, FindingRow.created_at, *_KEY)
        .where(FindingRow.resolved_at.is_(None))
        .with_for_update()
    )
    open_ = {(r.target_id, r.metric, r.kind): (r.id, r.created_at) for r in rows.all()}
    out: list[Finding] = []
    for f in findings:
        key = (f.target_id, f.metric, f.kind)
        values = {k: v for k, v in dataclasses.asdict(f).items() if k not in {"id", "created_at"}}
        values["updated_at"] = now
        if key in open_:
            episode, started = open_.pop(key)
            await conn.execute(sa.update(FindingRow).where(FindingRow.id == episode).values(**values))
        else:
            started = f.created_at
            episode = await conn.scalar(
                sa.insert(FindingRow).values(**values, created_at=started).returning(FindingRow.id)
            )
        out.append(dataclasses.replace(f, id=episode, created_at=started, updated_at=now))
    if open_:
        ids = [episode for episode, _ in open_.values()]
        await conn.execute(sa.update(FindingRow).where(FindingRow.id.in_(ids)).values(resolved_at=now))
    return out
