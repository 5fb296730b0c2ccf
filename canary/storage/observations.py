"""Detection's counts, kept from the raw rows: clustered observations and their hourly totals.

Detection's unit of evidence is one *observation* per (cell, metric, probe version, pass): the
pass's scores of that metric on that probe (``n``, ``failures``), at the time of its first score;
request errors are the same over runs, with the metric named ``availability``. ``observations``
holds one row per observation (a pass's repeats make one row), ``observation_rollup_hour`` their
totals per hour, so a round reads its hours of look-back from the first and its week of baseline
from the second, never the raw ``scores`` (:mod:`canary.detection.queries`).

:func:`refresh` brings both up to date, incrementally:

1. Under an advisory lock (one refresher at a time), read the highest run and score ids stored
   and the queued ranges of ``observation_dirty``: statement triggers on ``runs`` and ``scores``
   (migration 0009) write the time range of every INSERT there, in the inserting transaction,
   so a range is visible exactly when its rows are, whatever order transactions commit in.
2. Recompute every observation whose first score falls in a range widened by ``PASS_SPAN`` on
   each side (overlapping ranges merged): delete them and regroup the raw rows of that range
   widened by :data:`PASS_SPAN` again, so each pass is counted whole, in the range holding its
   first score. The hours' totals move by the difference. A first call (no progress row)
   backfills everything, in :data:`CHUNK` steps.
3. Delete the queued ranges read in step 1, store the ids read as the new progress, and note in
   :data:`REFRESHED` (per engine, in this process) the progress found and left and the hours
   recomputed, so a reader may keep totals of hours no refresh has touched since
   (:mod:`canary.detection.baselines`).

It is idempotent (delete and regroup), so a second call or an overlapping range changes nothing.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.storage.counts import run_counts, score_counts
from canary.storage.tables import (
    ObservationDirtyRow,
    ObservationHourRow,
    ObservationRow,
    RollupProgressRow,
    RunRow,
)

log = logging.getLogger(__name__)

AVAILABILITY = "availability"  # the metric name of request errors (timeouts, 5xx, refused, bad bodies)
PASS_SPAN = timedelta(minutes=15)  # a pass's runs all start within this of its first
CHUNK = timedelta(hours=6)  # one transaction per chunk: a backfill of weeks never holds one open
PROGRESS = "observations"
LOCK = "SELECT pg_advisory_lock(hashtext('canary.observations'))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext('canary.observations'))"
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True)
class Refreshed:
    """One refresh by this process: the progress (run id, score id) it found (``None``: none) and
    left, the hours ``[lo, hi)`` of ``observation_rollup_hour`` it recomputed (``None``: none), and
    the ranges ``[lo, hi)`` of ``observations.at`` it recomputed."""

    found: tuple[int, int] | None
    left: tuple[int, int]
    hours: tuple[datetime, datetime] | None
    ranges: tuple[tuple[datetime, datetime], ...] = ()


REFRESHED: weakref.WeakKeyDictionary[sa.Engine, Refreshed] = weakref.WeakKeyDictionary()


def clusters(
    lo: datetime, hi: datetime, cells: Sequence[str] | None = None, passes: Sequence[uuid.UUID] | None = None
) -> sa.Select[Any]:
    """Observations first scored in [lo, hi): ``target_id, metric, probe_pk, pass_id, n, failures, at``
    (of ``cells`` only, of ``passes`` only, when given)."""
    since, until = lo - PASS_SPAN, hi + PASS_SPAN
    scores = score_counts(since=since, until=until, cells=cells, by_probe=True, by_pass=True)
    runs_query = run_counts(since=since, until=until, cells=cells, by_probe=True, by_pass=True)
    if passes is not None:
        scores = scores.where(_among(RunRow.pass_id, passes))
        runs_query = runs_query.where(_among(RunRow.pass_id, passes))
    runs = runs_query.subquery()
    availability = sa.select(
        runs.c.target_id, sa.literal(AVAILABILITY).label("metric"), runs.c.probe_pk, runs.c.pass_id,
        runs.c.runs.label("n"), runs.c.errors.label("failures"), runs.c.at,
    )  # fmt: skip
    both = sa.union_all(scores, availability).subquery()
    return sa.select(
        both.c.target_id, both.c.metric, both.c.probe_pk, both.c.pass_id, both.c.n, both.c.failures, both.c.at
    ).where(both.c.at >= lo, both.c.at < hi)


def _among(column: Any, passes: Sequence[uuid.UUID]) -> sa.ColumnElement[bool]:
    """``column = ANY(array)``: one bind parameter however many passes."""
    among: sa.ColumnElement[bool] = column == sa.any_(sa.literal(list(passes), ARRAY(UUID(as_uuid=True))))
    return among


def _of(column: Any, passes: Sequence[uuid.UUID] | None) -> list[sa.ColumnElement[bool]]:
    return [_among(column, passes)] if passes is not None else []


def _floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


HOUR_SUMS = ("observations", "failing", "n", "failures")


def _add_to_hours(lo: datetime, hi: datetime, sign: int, passes: Sequence[uuid.UUID] | None) -> sa.Insert:
    """Add (``sign`` 1) or take away (-1) the hourly totals of the observations in [lo, hi)
    (of ``passes`` only, when given)."""
    obs: sa.Table = ObservationRow.__table__  # type: ignore[assignment]
    hours: sa.Table = ObservationHourRow.__table__  # type: ignore[assignment]
    hour = sa.func.date_trunc("hour", obs.c.at, "UTC", type_=sa.DateTime(timezone=True))
    sums = (
        sa.select(
            obs.c.target_id,
            obs.c.metric,
            obs.c.probe_pk,
            hour.label("hour"),
            sign * sa.func.count(),
            sign * sa.func.count().filter(obs.c.failures > 0),
            sign * sa.func.sum(obs.c.n),
            sign * sa.func.sum(obs.c.failures),
        )  # fmt: skip
        .where(obs.c.at >= lo, obs.c.at < hi, *_of(obs.c.pass_id, passes))
        .group_by(obs.c.target_id, obs.c.metric, obs.c.probe_pk, sa.literal_column("hour"))
    )
    insert = pg_insert(hours).from_select(["target_id", "metric", "probe_pk", "hour", *HOUR_SUMS], sums)
    return insert.on_conflict_do_update(
        index_elements=["target_id", "metric", "probe_pk", "hour"],
        set_={k: hours.c[k] + insert.excluded[k] for k in HOUR_SUMS},
    )


async def _refresh_range(
    conn: AsyncConnection, lo: datetime, hi: datetime, passes: Sequence[uuid.UUID] | None = None
) -> None:
    """Regroup the observations first scored in [lo, hi) (of ``passes`` only, when given) and move
    their hours' totals by the change.

    The hours are updated by difference (less the old rows' sums, plus the new ones'), so only
    the range is read, not every observation of the hours it touches; integer sums, so the
    totals are those a recount would give. An hour left with no observation of a key loses its row.
    """
    obs: sa.Table = ObservationRow.__table__  # type: ignore[assignment]
    hours: sa.Table = ObservationHourRow.__table__  # type: ignore[assignment]
    await conn.execute(_add_to_hours(lo, hi, -1, passes))
    await conn.execute(sa.delete(obs).where(obs.c.at >= lo, obs.c.at < hi, *_of(obs.c.pass_id, passes)))
    columns = ["target_id", "metric", "probe_pk", "pass_id", "n", "failures", "at"]
    await conn.execute(sa.insert(obs).from_select(columns, clusters(lo, hi, passes=passes)))
    await conn.execute(_add_to_hours(lo, hi, 1, passes))
    h_lo, h_hi = _floor_hour(lo), _floor_hour(hi - _TINY) + timedelta(hours=1)
    await conn.execute(
        sa.delete(hours).where(hours.c.hour >= h_lo, hours.c.hour < h_hi, hours.c.observations == 0)
    )


async def changed_since(
    conn: AsyncConnection, run_id: int, score_id: int
) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest time among runs and scores above the given ids (0, 0: every row)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT least((SELECT min(started_at) FROM runs WHERE id > :r),"
                "             (SELECT min(created_at) FROM scores WHERE id > :s)),"
                "       greatest((SELECT max(started_at) FROM runs WHERE id > :r),"
                "                (SELECT max(created_at) FROM scores WHERE id > :s))"
            ),
            {"r": run_id, "s": score_id},
        )
    ).one()
    return row[0], row[1]


Queued = tuple[int, datetime, datetime, tuple[uuid.UUID, ...] | None]  # id, lo, hi, passes (None: unknown)


async def queued(conn: AsyncConnection) -> list[Queued]:
    """The ranges inserted since the last refresh, committed so far, with the passes they hold."""
    dirty: sa.Table = ObservationDirtyRow.__table__  # type: ignore[assignment]
    rows = await conn.execute(sa.select(dirty.c.id, dirty.c.lo, dirty.c.hi, dirty.c.passes))
    return [
        (int(i), lo, hi, tuple(p) if p is not None and None not in p else None) for i, lo, hi, p in rows.all()
    ]


def stale_passes(dirty: Sequence[Queued]) -> list[tuple[datetime, datetime, tuple[uuid.UUID, ...] | None]]:
    """What to regroup: merged ranges (as :func:`stale_ranges`), each with the passes stored in it,
    or ``None`` (every observation of the range) where a queued range does not name its passes."""
    ranges = stale_ranges([(lo, hi) for _, lo, hi, _ in dirty])
    passes: list[set[uuid.UUID] | None] = [set() for _ in ranges]
    for _, lo, _, named in dirty:
        i = next(i for i, (a, b) in enumerate(ranges) if a <= lo - PASS_SPAN < b)
        current = passes[i]
        if named is None or current is None:
            passes[i] = None
        else:
            current.update(named)
    return [
        (a, b, tuple(sorted(p)) if p is not None else None) for (a, b), p in zip(ranges, passes, strict=True)
    ]


def stale_ranges(changed: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The observation ranges ``[lo, hi)`` that rows stored at ``changed`` times may alter, merged.

    A row at t belongs to the observation starting in [t - span, t], and may move one that
    started up to span after it (an earlier repeat stored late).
    """
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted((lo - PASS_SPAN, hi + PASS_SPAN) for lo, hi in changed):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


async def refresh(engine: AsyncEngine) -> int:
    """Bring ``observations`` and ``observation_rollup_hour`` up to date; returns the chunks recomputed."""
    chunks = 0
    hours: tuple[datetime, datetime] | None = None
    ranges: list[tuple[datetime, datetime]] = []
    async with engine.connect() as conn:
        await conn.execute(sa.text(LOCK))
        await conn.commit()
        try:
            progress = (
                await conn.execute(
                    sa.select(RollupProgressRow.last_run_id, RollupProgressRow.last_score_id).where(
                        RollupProgressRow.name == PROGRESS
                    )
                )
            ).first()
            ids = (
                await conn.execute(sa.text("SELECT (SELECT max(id) FROM runs), (SELECT max(id) FROM scores)"))
            ).one()
            dirty = await queued(conn)
            if progress is None:  # a first refresh: every stored row
                oldest, newest = await changed_since(conn, 0, 0)
                everything = [(0, oldest, newest, None)] if oldest is not None and newest is not None else []
                stale = stale_passes(everything)
            else:
                stale = stale_passes(dirty)
            await conn.commit()
            ranges = [(lo, hi) for lo, hi, _ in stale]
            if ranges:
                hours = (_floor_hour(ranges[0][0]), _floor_hour(ranges[-1][1] - _TINY) + timedelta(hours=1))
            for lo, end, passes in stale:
                while lo < end:
                    hi = min(lo + CHUNK, end)
                    async with conn.begin():
                        await conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
                        await _refresh_range(conn, lo, hi, passes)
                    chunks += 1
                    lo = hi
            async with conn.begin():
                if dirty:  # an array, not one bind parameter per id: a long queue is one statement
                    await conn.execute(
                        sa.text("DELETE FROM observation_dirty WHERE id = ANY(:ids)"),
                        {"ids": [i for i, _, _, _ in dirty]},
                    )
                left = (int(ids[0] or 0), int(ids[1] or 0))
                values = {"name": PROGRESS, "last_run_id": left[0], "last_score_id": left[1]}
                upsert = pg_insert(RollupProgressRow).values(values)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["name"],
                        set_={k: upsert.excluded[k] for k in ("last_run_id", "last_score_id")},
                    )
                )
        finally:
            await conn.execute(sa.text(UNLOCK))
            await conn.commit()
    found = (int(progress[0]), int(progress[1])) if progress else None
    REFRESHED[engine.sync_engine] = Refreshed(found, left, hours, tuple(ranges))
    log.debug("observations refreshed: %d chunks", chunks)
    return chunks
