"""Each stream's baseline (the week before its look-back), its whole hours' sums kept between rounds.

The baseline is the totals of :func:`canary.detection.queries.totals` per probe version: whole
hours from ``observation_rollup_hour`` (a week is 168 hours of every (cell, metric, probe), two
million rows at 1,000 cells, most of a round's reading) and the partial hours at either end from
``observations``. The whole hours' sums change only when the hour does or when a refresh
recomputes one of them, so they are kept per engine for the hour range read, and used again
while every refresh since was this process's own (the progress each found is the one the
previous left) and recomputed none of those hours (:data:`canary.storage.observations.REFRESHED`).
Sums of integers, so kept or read they are the same numbers.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.storage.observations import REFRESHED, Refreshed
from canary.storage.tables import ObservationHourRow, ObservationRow

ProbeKey = tuple[int, str, int]  # target id, metric, probe version
Sums = dict[ProbeKey, tuple[int, int]]  # failing observations, observations
OBS: sa.Table = ObservationRow.__table__  # type: ignore[assignment]
HOURS: sa.Table = ObservationHourRow.__table__  # type: ignore[assignment]


@dataclass
class _Kept:
    hours: tuple[datetime, datetime]
    valid_after: Refreshed  # the latest refresh these sums are known to hold after
    sums: Sums


_KEPT: weakref.WeakKeyDictionary[sa.Engine, _Kept] = weakref.WeakKeyDictionary()


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _sums(conn: AsyncConnection, query: sa.Select[Any]) -> Sums:
    return {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in (await conn.execute(query)).all()}


def _hour_sums(lo: datetime, hi: datetime) -> sa.Select[Any]:
    keys = (HOURS.c.target_id, HOURS.c.metric, HOURS.c.probe_pk)
    return (
        sa.select(*keys, sa.func.sum(HOURS.c.failing), sa.func.sum(HOURS.c.observations))
        .where(HOURS.c.hour >= lo, HOURS.c.hour < hi)
        .group_by(*keys)
    )


def _edge_sums(since: datetime, until: datetime, whole: tuple[datetime, datetime] | None) -> sa.Select[Any]:
    keys = (OBS.c.target_id, OBS.c.metric, OBS.c.probe_pk)
    where = sa.and_(OBS.c.at > since, OBS.c.at <= until)
    if whole is not None:
        where = sa.and_(where, sa.or_(OBS.c.at < whole[0], OBS.c.at >= whole[1]))
    return (
        sa.select(*keys, sa.func.count().filter(OBS.c.failures > 0), sa.func.count())
        .where(where)
        .group_by(*keys)
    )


async def _whole_hours(conn: AsyncConnection, lo: datetime, hi: datetime) -> Sums:
    """Sums of the hours ``[lo, hi)``, kept from an earlier round where still valid."""
    engine = conn.sync_engine
    refreshed = REFRESHED.get(engine)
    kept = _KEPT.get(engine)
    # Only a refresh of this process since, starting where the last one known left off, tells
    # what changed: without one, another process may have refreshed.
    if kept is not None and refreshed is not None and refreshed is not kept.valid_after:
        touched = refreshed.hours
        if (
            refreshed.found == kept.valid_after.left
            and kept.hours == (lo, hi)
            and (touched is None or touched[1] <= lo or touched[0] >= hi)
        ):
            kept.valid_after = refreshed
            return kept.sums
    sums = await _sums(conn, _hour_sums(lo, hi))
    if refreshed is not None:
        _KEPT[engine] = _Kept((lo, hi), refreshed, sums)
    else:
        _KEPT.pop(engine, None)
    return sums


async def baseline_sums(conn: AsyncConnection, since: datetime, until: datetime) -> Sums:
    """Per (cell, metric, probe version) over observations in ``(since, until]``: failing, observations.

    The same totals as ``queries.totals(since, until, by_probe=True)``.
    """
    lo, hi = _hour(since) + timedelta(hours=1), _hour(until)
    if lo >= hi:
        return await _sums(conn, _edge_sums(since, until, None))
    out = dict(await _whole_hours(conn, lo, hi))
    for key, (failing, n) in (await _sums(conn, _edge_sums(since, until, (lo, hi)))).items():
        before = out.get(key, (0, 0))
        out[key] = (before[0] + failing, before[1] + n)
    return out
