"""Observations as of now: the ``observations`` table where it is settled, the raw rows after that.

``observations`` is refreshed by the detection round (:func:`canary.storage.observations.refresh`),
so it lags the raw rows by up to a round. Readers that must see every stored run (deploy verdicts,
``/api/results``) do not refresh it themselves: that would write from any replica, take the
refresher's lock on every request and re-read the last half hour each time. They read instead
:func:`observed`: stored observations first scored before :func:`settled_before` (no row stored
since the last refresh can belong to them), and below that time the raw rows regrouped by the
very query the refresh uses (:func:`canary.storage.observations.clusters`), from the oldest
range queued for the next refresh on only. The result is what a refresh followed by a read would
give.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.storage.observations import PASS_SPAN, PROGRESS, clusters, queued
from canary.storage.tables import ObservationRow, RollupProgressRow, TargetRow

OBSERVATIONS: sa.Table = ObservationRow.__table__  # type: ignore[assignment]


ALL = datetime.max.replace(tzinfo=UTC)  # nothing stored since the last refresh
NONE = datetime.min.replace(tzinfo=UTC)  # never refreshed: every observation from the raw rows


async def settled_before(conn: AsyncConnection) -> datetime:
    """The time before which ``observations`` is exact (:data:`ALL`, :data:`NONE` or between)."""
    progress = (
        await conn.execute(sa.select(RollupProgressRow.name).where(RollupProgressRow.name == PROGRESS))
    ).first()
    if progress is None:
        return NONE
    dirty = await queued(conn)
    # A row at t belongs to an observation first scored in [t - span, t] (or moves one to t).
    return min(lo for _, lo, _, _ in dirty) - PASS_SPAN if dirty else ALL


def observed(
    settled: datetime, since: datetime, until: datetime, cells: Sequence[str] | None = None
) -> sa.Select[Any]:
    """Observations first scored in [since, until), of ``cells`` when given, exact up to now:
    ``target_id, metric, probe_pk, pass_id, n, failures, at`` (see the module docstring)."""
    cut = max(since, min(settled, until))
    obs = OBSERVATIONS.c
    stored = sa.select(obs.target_id, obs.metric, obs.probe_pk, obs.pass_id, obs.n, obs.failures, obs.at)
    stored = stored.where(obs.at >= since, obs.at < cut)
    if cells is not None:
        stored = stored.where(
            obs.target_id.in_(sa.select(TargetRow.id).where(TargetRow.cell.in_(list(cells))))
        )
    if cut >= until:
        return stored
    return sa.union_all(stored, clusters(cut, until, cells)).subquery().select()
