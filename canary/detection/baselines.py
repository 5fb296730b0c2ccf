"""Per-probe totals over a moving range (a stream's baseline, the peers' window), kept between rounds.

The totals are those of :func:`canary.detection.queries.totals` per probe version: whole hours
from ``observation_rollup_hour`` (a week is 168 hours of every (cell, metric, probe), two million
rows at 1,000 cells, most of a round's reading) and the partial hours at either end from
``observations`` (up to an hour of rows each). Both are kept per engine and per use (``name``),
and used again while every refresh since was this process's own (the progress each found is the
one the previous left, :data:`canary.storage.observations.REFRESHED`):

- the whole hours' sums, while the hour range is the same and no refresh recomputed one of them;
- the edges' sums, moved with the range: the rows that left the start taken away, the rows that
  reached the end added, while no refresh recomputed observations inside either edge.

Sums of integers, so kept or read they are the same numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.storage.observations import REFRESHED, Refreshed
from canary.storage.tables import ObservationHourRow, ObservationRow

ProbeKey = tuple[int, str, int]  # target id, metric, probe version
Totals = tuple[int, int, int, int]  # observations, failing observations, scores (n), failures
Sums = dict[ProbeKey, Totals]
OBS: sa.Table = ObservationRow.__table__  # type: ignore[assignment]
HOURS: sa.Table = ObservationHourRow.__table__  # type: ignore[assignment]


@dataclass
class _Kept:
    since: datetime
    until: datetime
    hours: tuple[datetime, datetime]
    valid_after: Refreshed  # the latest refresh these sums are known to hold after
    whole: Sums
    lower: Sums  # since < at < hours[0]
    upper: Sums  # hours[1] <= at <= until


_KEPT: weakref.WeakKeyDictionary[sa.Engine, dict[str, _Kept]] = weakref.WeakKeyDictionary()


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _sums(conn: AsyncConnection, query: sa.Select[Any]) -> Sums:
    rows = (await conn.execute(query)).all()
    return {(r[0], r[1], r[2]): (int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows}


def _hour_sums(lo: datetime, hi: datetime) -> sa.Select[Any]:
    keys = (HOURS.c.target_id, HOURS.c.metric, HOURS.c.probe_pk)
    sums = (HOURS.c.observations, HOURS.c.failing, HOURS.c.n, HOURS.c.failures)
    return (
        sa.select(*keys, *(sa.func.sum(c) for c in sums))
        .where(HOURS.c.hour >= lo, HOURS.c.hour < hi)
        .group_by(*keys)
    )


def _obs_sums(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    keys = (OBS.c.target_id, OBS.c.metric, OBS.c.probe_pk)
    return (
        sa.select(
            *keys,
            sa.func.count(),
            sa.func.count().filter(OBS.c.failures > 0),
            sa.func.sum(OBS.c.n),
            sa.func.sum(OBS.c.failures),
        )  # fmt: skip
        .where(*where)
        .group_by(*keys)
    )


def _add(a: Sums, b: Sums, sign: int = 1) -> Sums:
    out = dict(a)
    for key, t in b.items():
        before = out.get(key)
        if before is None:
            total = t if sign == 1 else (-t[0], -t[1], -t[2], -t[3])
        else:
            total = (
                before[0] + sign * t[0], before[1] + sign * t[1],
                before[2] + sign * t[2], before[3] + sign * t[3],
            )  # fmt: skip
        if total[0]:
            out[key] = total
        else:
            out.pop(key, None)  # no observation left: a fresh read has no row for it
    return out


def _touched(ranges: Iterable[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> bool:
    """Whether a recomputed range ``[a, b)`` meets ``[lo, hi]``."""
    return any(a <= hi and b > lo for a, b in ranges)


def _follows(kept: _Kept | None, refreshed: Refreshed | None) -> bool:
    """Only a refresh of this process since, starting where the last one known left off, tells
    what changed: without one, another process may have refreshed."""
    return (
        kept is not None
        and refreshed is not None
        and refreshed is not kept.valid_after
        and refreshed.found == kept.valid_after.left
    )


async def kept_totals(conn: AsyncConnection, name: str, since: datetime, until: datetime) -> Sums:
    """Per (cell, metric, probe version) over observations in ``(since, until]``: observations,
    failing observations, scores and failures; the same totals as
    ``queries.totals(since, until, by_probe=True)``, kept under ``name`` for the next call."""
    lo, hi = _hour(since) + timedelta(hours=1), _hour(until)
    if lo >= hi:
        return await _sums(conn, _obs_sums(OBS.c.at > since, OBS.c.at <= until))
    engine = conn.sync_engine
    refreshed = REFRESHED.get(engine)
    kept = _KEPT.get(engine, {}).get(name)
    old = kept if _follows(kept, refreshed) else None
    ranges = refreshed.ranges if refreshed is not None else ()
    if old is not None and old.hours == (lo, hi) and not _touched(ranges, lo, hi):
        whole = old.whole
    else:
        whole = await _sums(conn, _hour_sums(lo, hi))
    if old is not None and old.hours[0] == lo and since >= old.since and not _touched(ranges, old.since, lo):
        gone = await _sums(conn, _obs_sums(OBS.c.at > old.since, OBS.c.at <= since))
        lower = _add(old.lower, gone, -1)
    else:
        lower = await _sums(conn, _obs_sums(OBS.c.at > since, OBS.c.at < lo))
    if old is not None and old.hours[1] == hi and until >= old.until and not _touched(ranges, hi, old.until):
        reached = await _sums(conn, _obs_sums(OBS.c.at > old.until, OBS.c.at <= until))
        upper = _add(old.upper, reached)
    else:
        upper = await _sums(conn, _obs_sums(OBS.c.at >= hi, OBS.c.at <= until))
    if refreshed is not None:
        _KEPT.setdefault(engine, {})[name] = _Kept(since, until, (lo, hi), refreshed, whole, lower, upper)
    else:
        _KEPT.get(engine, {}).pop(name, None)
    return _add(_add(whole, lower), upper)


async def baseline_sums(
    conn: AsyncConnection, since: datetime, until: datetime
) -> dict[ProbeKey, tuple[int, int]]:
    """Per (cell, metric, probe version) over observations in ``(since, until]``: failing, observations."""
    return {key: (t[1], t[0]) for key, t in (await kept_totals(conn, "baseline", since, until)).items()}
