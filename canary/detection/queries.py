"""The SQL that feeds detection: clustered observations, per-stratum baselines, peer and window counts.

Counts come from :mod:`canary.storage.observations` (one row per pass and probe version, and
their hourly totals), kept from the raw rows by the counts of :mod:`canary.storage.counts`, so a
failure means what it means for verdicts, the API and the rollups; raw rows are read only for the
newest run of a cell and a finding's evidence. The results are plain data for the pure decisions of
:mod:`canary.detection.decisions` and :mod:`canary.detection.sequential`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.config.sections import DetectionSpec
from canary.detection.baselines import baseline_sums, kept_totals
from canary.detection.decisions import Counts
from canary.detection.lookback import lookback
from canary.detection.sequential import Stream
from canary.storage.counts import run_counts
from canary.storage.observations import AVAILABILITY
from canary.storage.tables import ObservationHourRow, ObservationRow, RunRow, TargetRow

__all__ = [
    "AVAILABILITY",
    "last_runs",
    "per_probe",
    "request_errors",
    "streams",
    "targets",
    "totals",
    "window_counts",
]

Key = tuple[int, str]
OBS: sa.Table = ObservationRow.__table__  # type: ignore[assignment]
HOURS: sa.Table = ObservationHourRow.__table__  # type: ignore[assignment]


async def targets(conn: AsyncConnection) -> dict[int, tuple[str, str]]:
    """Every known cell: id -> (cell name, model)."""
    rows = await conn.execute(sa.select(TargetRow.id, TargetRow.cell, TargetRow.model))
    return {tid: (cell, model) for tid, cell, model in rows.all()}


def _wanted(metric: str, spec: DetectionSpec) -> bool:
    return metric == AVAILABILITY or any(fnmatchcase(metric, g) for g in spec.metrics)


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def totals(
    since: datetime, until: datetime, *, by_probe: bool, metrics: Sequence[str] | None = None
) -> sa.Select[Any]:
    """Per (cell, metric[, probe version]) over observations in ``(since, until]``: ``observations,
    failing, n, failures``.

    Whole hours inside the range come from ``observation_rollup_hour``; the partial hours at
    either end from ``observations``, so the totals are those of the observations themselves.
    """
    full_lo, full_hi = _hour(since) + timedelta(hours=1), _hour(until)
    one = sa.literal(1)
    edges = sa.and_(OBS.c.at > since, OBS.c.at <= until)
    parts: list[sa.Select[Any]] = []
    if full_lo < full_hi:
        edges = sa.and_(edges, sa.or_(OBS.c.at < full_lo, OBS.c.at >= full_hi))
        parts.append(
            sa.select(
                HOURS.c.target_id, HOURS.c.metric, HOURS.c.probe_pk, HOURS.c.observations,
                HOURS.c.failing, HOURS.c.n, HOURS.c.failures,
            ).where(HOURS.c.hour >= full_lo, HOURS.c.hour < full_hi)
        )  # fmt: skip
    parts.append(
        sa.select(
            OBS.c.target_id, OBS.c.metric, OBS.c.probe_pk, one.label("observations"),
            sa.cast(OBS.c.failures > 0, sa.Integer).label("failing"), OBS.c.n, OBS.c.failures,
        ).where(edges)
    )  # fmt: skip
    union = sa.union_all(*parts).subquery()
    keys = [union.c.target_id, union.c.metric] + ([union.c.probe_pk] if by_probe else [])
    query = sa.select(
        *keys, *(sa.func.sum(union.c[k]).label(k) for k in ("observations", "failing", "n", "failures"))
    ).group_by(*keys)
    if metrics is not None:
        query = query.where(union.c.metric.in_(list(metrics)))
    return query


async def streams(
    conn: AsyncConnection, names: Mapping[int, tuple[str, str]], spec: DetectionSpec, now: datetime
) -> list[Stream]:
    """Every (cell, metric) stream over the look-back, request errors included, with its baselines.

    1. Observations (:mod:`canary.storage.observations`) over ``(now - history_s, now]``, the
       part read by the previous round kept (:mod:`canary.detection.lookback`).
    2. Baselines: per probe version over the ``baseline_s`` before that, from the hourly totals
       (:mod:`canary.detection.baselines`, whole hours kept between rounds).
    """
    start = now - timedelta(seconds=spec.history_s)
    base_start = start - timedelta(seconds=spec.baseline_s)
    baselines: dict[Key, dict[int, Counts]] = defaultdict(dict)
    for (tid, metric, probe), (failing, n) in (await baseline_sums(conn, base_start, start)).items():
        baselines[(tid, metric)][probe] = Counts(failing, n)
    out = []
    wanted: dict[str, bool] = {}  # a few metrics, thousands of streams
    for (tid, metric), obs in (await lookback(conn, start, now)).items():
        if metric not in wanted:
            wanted[metric] = _wanted(metric, spec)
        if tid not in names or not wanted[metric]:
            continue
        out.append(
            Stream(
                tid,
                names[tid][0],
                metric,
                obs.at,
                obs.probe,
                obs.n,
                obs.failures,
                baselines.get((tid, metric), {}),
                obs.passes,
            )
        )
    return out


async def per_probe(conn: AsyncConnection, since: datetime, now: datetime) -> dict[Key, dict[int, Counts]]:
    """Scores and failures per (cell, metric, probe version) over ``(since, now]``: the peer test's input
    (kept between rounds, :mod:`canary.detection.baselines`)."""
    out: dict[Key, dict[int, Counts]] = defaultdict(dict)
    for (tid, metric, probe), (_, _, n, failures) in (await kept_totals(conn, "peers", since, now)).items():
        if metric != AVAILABILITY:
            out[(tid, metric)][probe] = Counts(failures, n)
    return out


async def window_counts(
    conn: AsyncConnection, metrics: Sequence[str], since: datetime, until: datetime
) -> dict[Key, Counts]:
    """Scores and failures per (cell, metric) in ``(since, until]`` for the named metrics."""
    q = totals(since, until, by_probe=False, metrics=list(metrics))
    return {(r.target_id, r.metric): Counts(int(r.failures), int(r.n)) for r in (await conn.execute(q)).all()}


async def last_runs(
    conn: AsyncConnection, cells: Sequence[str]
) -> dict[str, tuple[int, datetime | None, datetime | None, datetime]]:
    """Per configured cell with a row: (id, its newest run's start, its newest answered run's start,
    when it was first seen); ``None`` where there is no such run."""
    # Per cell, the newest rows through its (target_id, started_at) index: a GROUP BY over all
    # runs would read every stored row.
    newest = (
        sa.select(RunRow.started_at)
        .where(RunRow.target_id == TargetRow.id)
        .order_by(RunRow.started_at.desc())
    )
    last = newest.limit(1).scalar_subquery()
    last_ok = newest.where(RunRow.status == "ok").limit(1).scalar_subquery()
    rows = await conn.execute(
        sa.select(TargetRow.id, TargetRow.cell, last, last_ok, TargetRow.first_seen).where(
            TargetRow.cell.in_(list(cells))
        )
    )
    return {cell: (tid, last, last_ok, first_seen) for tid, cell, last, last_ok, first_seen in rows.all()}


async def request_errors(conn: AsyncConnection, target_id: int, since: datetime, now: datetime) -> Counts:
    """One cell's request errors and requests over ``(since, now]``."""
    row = (
        await conn.execute(run_counts(since=since, until=now, closed="right", target_ids=[target_id]))
    ).first()
    return Counts(int(row.errors), int(row.runs)) if row is not None else Counts()
