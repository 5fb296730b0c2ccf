"""Per-probe totals over a moving range (a stream's baseline, the peers' window), kept between rounds.

The totals are those of :func:`canary.detection.queries.totals` per probe version: whole hours
from ``observation_rollup_hour`` (a week is 168 hours of every (cell, metric, probe), two million
rows at 1,000 cells, most of a round's reading) and the partial hours at either end from
``observations`` (up to an hour of rows each). Both are kept per engine and per use (``name``),
and used again while every refresh since was this process's own (the progress each found is the
one the previous left, :data:`canary.storage.observations.REFRESHED`):

- the whole hours' sums, in two parts: the last hour (:data:`RECENT`, which a refresh of new
  rows recomputes while it is young) and the hours before it. The older part moves with the
  range (the hours that left taken away, those that joined added, one hour at a new hour) while
  no refresh recomputed one of its hours; the last hour is read again when one did;
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


RECENT = timedelta(hours=1)  # the whole hours kept apart: those a refresh of new rows touches


@dataclass
class _Kept:
    since: datetime
    until: datetime
    hours: tuple[datetime, datetime, datetime]  # lo, mid, hi: whole hours [lo, mid) and [mid, hi)
    valid_after: Refreshed  # the latest refresh these sums are known to hold after
    early: Sums  # hours[0] <= hour < hours[1]
    late: Sums  # hours[1] <= hour < hours[2]
    whole: Sums  # early and late together
    lower: Sums  # since < at < hours[0]
    upper: Sums  # hours[2] <= at <= until


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


def _add(a: Sums, *parts: Sums, sign: int = 1) -> Sums:
    """``a`` plus (``sign`` 1) or less (-1) each of ``parts``, in one copy of ``a`` (copied at C
    speed; the parts, the smaller sums, are added in Python)."""
    out = dict(a)
    for b in parts:
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
    hours = (lo, max(lo, hi - RECENT), hi)
    early, late = await _whole_hours(conn, old, hours, ranges)
    kept_whole = old is not None and old.early is early and old.late is late
    whole = old.whole if old is not None and kept_whole else _add(early, late)
    if old is not None and old.hours[0] == lo and since >= old.since and not _touched(ranges, old.since, lo):
        gone = await _sums(conn, _obs_sums(OBS.c.at > old.since, OBS.c.at <= since))
        lower = _add(old.lower, gone, sign=-1)
    else:
        lower = await _sums(conn, _obs_sums(OBS.c.at > since, OBS.c.at < lo))
    if old is not None and old.hours[2] == hi and until >= old.until and not _touched(ranges, hi, old.until):
        reached = await _sums(conn, _obs_sums(OBS.c.at > old.until, OBS.c.at <= until))
        upper = _add(old.upper, reached)
    else:
        upper = await _sums(conn, _obs_sums(OBS.c.at >= hi, OBS.c.at <= until))
    if refreshed is not None:
        _KEPT.setdefault(engine, {})[name] = _Kept(
            since, until, hours, refreshed, early, late, whole, lower, upper
        )
    else:
        _KEPT.get(engine, {}).pop(name, None)
    return _add(whole, lower, upper)


async def _whole_hours(
    conn: AsyncConnection,
    old: _Kept | None,
    hours: tuple[datetime, datetime, datetime],
    ranges: Iterable[tuple[datetime, datetime]],
) -> tuple[Sums, Sums]:
    """The whole hours' sums over ``[lo, mid)`` and ``[mid, hi)`` (``hours``), from ``old``'s where
    no refresh since recomputed them: the older part moved by the hours that left and joined."""
    lo, mid, hi = hours
    ranges = tuple(ranges)
    if old is not None and old.hours[0] <= lo <= old.hours[1] <= mid and not _touched(ranges, *old.hours[:2]):
        early = old.early
        if lo > old.hours[0]:
            early = _add(early, await _sums(conn, _hour_sums(old.hours[0], lo)), sign=-1)
        if mid > old.hours[1]:
            early = _add(early, await _sums(conn, _hour_sums(old.hours[1], mid)))
    else:
        early = await _sums(conn, _hour_sums(lo, mid)) if lo < mid else {}
    if old is not None and old.hours[1:] == (mid, hi) and not _touched(ranges, mid, hi):
        late = old.late
    else:
        late = await _sums(conn, _hour_sums(mid, hi))
    return early, late


async def baseline_sums(
    conn: AsyncConnection, since: datetime, until: datetime
) -> dict[ProbeKey, tuple[int, int]]:
    """Per (cell, metric, probe version) over observations in ``(since, until]``: failing, observations."""
    return {key: (t[1], t[0]) for key, t in (await kept_totals(conn, "baseline", since, until)).items()}
