"""Rollups behind the dashboards: per (cell, metric, minute/hour) counts and per-cell latency.

Dashboards and the status page read ``score_rollup_*`` and ``run_rollup_*`` (through the views of
migration 0003) so that a panel over 30 days reads hundreds of rows, not millions of runs.
:func:`refresh_rollups` recomputes every minute and hour that starts at or after ``since``
from the raw rows with ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE`` (the score rows'
SELECT is :func:`canary.storage.counts.score_counts`, the query detection and verdicts read): it is
idempotent, so running it twice, or on overlapping ranges from two replicas, gives the same rows.

:class:`RollupRefresher` is the service's periodic duty: it remembers the highest score and run
ids it has seen and refreshes from the oldest time among rows newer than those, so late rows
(a slow pass, a replica catching up) are counted in their own minute.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.storage.counts import CalendarBuckets, Grain, score_counts
from canary.storage.tables import ScoreRollupHourRow, ScoreRollupMinuteRow

log = logging.getLogger(__name__)

ROLLUP_INTERVAL_S = 30.0  # how often the service's leader refreshes: the overview lags by at most this
CHUNK = timedelta(hours=6)  # one transaction per chunk: a backfill of weeks never holds one open
LATE_MARGIN = timedelta(minutes=5)  # ids are assigned at insert, not commit: re-read a little
SCORE_ROLLUPS: dict[Grain, sa.Table] = {
    "minute": ScoreRollupMinuteRow.__table__,  # type: ignore[dict-item]
    "hour": ScoreRollupHourRow.__table__,  # type: ignore[dict-item]
}

RUN_ROLLUP = """
INSERT INTO run_rollup_{grain} (target_id, {grain}, runs, errors, latency_p50_ms, latency_p95_ms,
                                latency_max_ms, pools)
WITH window_runs AS (
    SELECT target_id, date_trunc('{grain}', started_at) AS bucket, status, latency_ms,
           coalesce(served_pool, 'unknown') AS pool
    FROM runs
    WHERE started_at >= :lo AND started_at < :hi AND reason IS DISTINCT FROM 'cancelled'
), stats AS (
    SELECT target_id, bucket, count(*) AS runs, count(*) FILTER (WHERE status = 'error') AS errors,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'ok') AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'ok') AS p95,
           max(latency_ms) FILTER (WHERE status = 'ok') AS max
    FROM window_runs GROUP BY 1, 2
), pools AS (
    SELECT target_id, bucket, jsonb_object_agg(pool, n) AS pools
    FROM (SELECT target_id, bucket, pool, count(*) AS n FROM window_runs GROUP BY 1, 2, 3) per_pool
    GROUP BY 1, 2
)
SELECT s.target_id, s.bucket, s.runs, s.errors, s.p50, s.p95, s.max, p.pools
FROM stats s JOIN pools p USING (target_id, bucket)
ORDER BY s.target_id, s.bucket
ON CONFLICT (target_id, {grain})
DO UPDATE SET runs = EXCLUDED.runs, errors = EXCLUDED.errors, latency_p50_ms = EXCLUDED.latency_p50_ms,
              latency_p95_ms = EXCLUDED.latency_p95_ms, latency_max_ms = EXCLUDED.latency_max_ms,
              pools = EXCLUDED.pools
"""


def floor_to(t: datetime, grain: str) -> datetime:
    """``t`` truncated to its minute or hour (in UTC, as ``date_trunc`` on a UTC session does)."""
    t = t.astimezone(UTC)
    if grain == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(second=0, microsecond=0)


def score_rollup(grain: Grain, lo: datetime, hi: datetime) -> sa.Insert:
    """Upsert ``score_rollup_{grain}`` for ``[lo, hi)`` from :func:`canary.storage.counts.score_counts`.

    The rollup's ``runs`` column is the count query's ``n`` (scored runs of the metric). Rows
    are upserted in primary-key order, as they always were.
    """
    table = SCORE_ROLLUPS[grain]
    counts = score_counts(since=lo, until=hi, buckets=CalendarBuckets(grain))
    counts = counts.order_by(*(counts.selected_columns[k] for k in ("target_id", "metric", "bucket")))
    insert = pg_insert(table).from_select(["target_id", "metric", grain, "runs", "failures"], counts)
    return insert.on_conflict_do_update(
        index_elements=["target_id", "metric", grain],
        set_={"runs": insert.excluded.runs, "failures": insert.excluded.failures},
    )


def rollup_counts(
    grain: Grain,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    target_ids: Sequence[int] | None = None,
) -> sa.Select[Any]:
    """:func:`~canary.storage.counts.score_counts` with ``CalendarBuckets(grain)``, read from the rollup.

    Same columns (``target_id, metric, bucket, n, failures``), one row per stored bucket in
    ``since <= bucket < until``: what a reader of long windows or many cells (the status page)
    takes instead of scanning ``scores``. A bucket is as fresh as the last refresh.
    """
    table = SCORE_ROLLUPS[grain]
    bucket = table.c[grain]
    conditions = []
    if since is not None:
        conditions.append(bucket >= since)
    if until is not None:
        conditions.append(bucket < until)
    if target_ids is not None:
        conditions.append(table.c.target_id.in_(list(target_ids)))
    return sa.select(
        table.c.target_id, table.c.metric, bucket.label("bucket"), table.c.runs.label("n"), table.c.failures
    ).where(*conditions)


async def _refresh_range(conn: AsyncConnection, grain: Grain, lo: datetime, hi: datetime) -> int:
    params = {"lo": lo, "hi": hi}
    scores = await conn.execute(score_rollup(grain, lo, hi))
    runs = await conn.execute(sa.text(RUN_ROLLUP.format(grain=grain)), params)
    return int(scores.rowcount or 0) + int(runs.rowcount or 0)


async def refresh_rollups(engine: AsyncEngine, since: datetime, *, until: datetime | None = None) -> int:
    """Recompute every rollup minute and hour from the one holding ``since`` up to ``until``.

    1. Minutes start at ``since``'s minute; hours at ``since``'s hour, since an hour's row is
       only right when all of its runs are counted. Both end at ``until`` rounded up to the
       hour (default: now plus a minute), so the current, partial hour is always included.
    2. Each grain walks its range in :data:`CHUNK` steps, one transaction each, upserting from
       the raw scores and runs; sessions run in UTC so the run rollup's ``date_trunc`` cuts UTC
       minutes and hours (the score counts cut in UTC whatever the session's time zone).
    Returns the number of rollup rows written.
    """
    end = until or datetime.now(UTC) + timedelta(minutes=1)
    if end > floor_to(end, "hour"):
        end = floor_to(end, "hour") + timedelta(hours=1)
    written = 0
    grain: Grain
    for grain in ("minute", "hour"):
        lo = floor_to(since, grain)
        while lo < end:
            hi = min(lo + CHUNK, end)
            async with engine.begin() as conn:
                await conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
                # A backfill chunk groups ~10^5 keys: keep the hash aggregate in memory.
                await conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
                written += await _refresh_range(conn, grain, lo, hi)
            lo = hi
    return written


@dataclass
class RollupRefresher:
    """The periodic duty: refresh what changed since the last call.

    The first call starts from the newest rollup minute already stored (or from the oldest
    score on an empty table, a full backfill); later calls from the oldest row whose id is
    above the highest id seen so far, minus :data:`LATE_MARGIN` because a row with a lower id
    can commit after one with a higher id.
    """

    last_score_id: int | None = None
    last_run_id: int | None = None
    refreshed: list[int] = field(default_factory=list)  # rows written per call, for tests and logs

    async def _since(self, conn: AsyncConnection, now: datetime) -> datetime | None:
        if self.last_score_id is None or self.last_run_id is None:
            newest: datetime | None = await conn.scalar(
                sa.text("SELECT max(minute) FROM score_rollup_minute")
            )
            if newest is not None:
                return min(newest, now - LATE_MARGIN)
            first: datetime | None = await conn.scalar(
                sa.text(
                    "SELECT least((SELECT min(created_at) FROM scores), (SELECT min(started_at) FROM runs))"
                )
            )
            return first
        oldest = await conn.scalar(
            sa.text(
                "SELECT least((SELECT min(created_at) FROM scores WHERE id > :s),"
                " (SELECT min(started_at) FROM runs WHERE id > :r))"
            ),
            {"s": self.last_score_id, "r": self.last_run_id},
        )
        return min(oldest, now - LATE_MARGIN) if oldest is not None else now - LATE_MARGIN

    async def step(self, engine: AsyncEngine, now: datetime) -> int:
        """Refresh the rollups for everything stored since the previous step."""
        async with engine.connect() as conn:
            ids = (
                await conn.execute(sa.text("SELECT (SELECT max(id) FROM scores), (SELECT max(id) FROM runs)"))
            ).one()
            since = await self._since(conn, now)
        if since is None:  # nothing stored yet
            return 0
        written = await refresh_rollups(engine, since)
        self.last_score_id, self.last_run_id = ids[0] or 0, ids[1] or 0
        self.refreshed.append(written)
        log.debug("rollups refreshed from %s: %d rows", since.isoformat(), written)
        return written
