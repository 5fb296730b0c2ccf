"""The SQL that feeds detection: clustered observations, per-stratum baselines, peer and window counts.

Every read goes through :mod:`canary.storage.counts`, so a failure means what it means for
verdicts, the API and the rollups. The results are plain data for the pure decisions of
:mod:`canary.detection.decisions` and :mod:`canary.detection.sequential`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts
from canary.detection.sequential import Stream
from canary.storage.counts import run_counts, score_counts
from canary.storage.tables import RunRow, TargetRow

AVAILABILITY = "availability"  # the metric name of request errors (timeouts, 5xx, refused, bad bodies)
Key = tuple[int, str]


async def targets(conn: AsyncConnection) -> dict[int, tuple[str, str]]:
    """Every known cell: id -> (cell name, model)."""
    rows = await conn.execute(sa.select(TargetRow.id, TargetRow.cell, TargetRow.model))
    return {tid: (cell, model) for tid, cell, model in rows.all()}


def _wanted(metric: str, spec: DetectionSpec) -> bool:
    return metric == AVAILABILITY or any(fnmatchcase(metric, g) for g in spec.metrics)


def _score_clusters(since: datetime, until: datetime) -> sa.Select[Any]:
    """(target_id, metric, probe_pk, pass_id, n, failures, at): one row per clustered observation."""
    return score_counts(since=since, until=until, closed="right", by_probe=True, by_pass=True)


def _run_clusters(since: datetime, until: datetime) -> sa.Select[Any]:
    """The same shape over request errors, with the metric named ``availability``."""
    q = run_counts(since=since, until=until, closed="right", by_probe=True, by_pass=True).subquery()
    return sa.select(
        q.c.target_id, sa.literal(AVAILABILITY).label("metric"), q.c.probe_pk, q.c.pass_id,
        q.c.runs.label("n"), q.c.errors.label("failures"), q.c.at,
    )  # fmt: skip


def _baseline(clusters: sa.Select[Any]) -> sa.Select[Any]:
    """Per (cell, metric, probe version): failing observations and observations."""
    c = clusters.subquery()
    return sa.select(
        c.c.target_id, c.c.metric, c.c.probe_pk,
        sa.func.count().filter(c.c.failures > 0), sa.func.count(),
    ).group_by(c.c.target_id, c.c.metric, c.c.probe_pk)  # fmt: skip


async def streams(
    conn: AsyncConnection, names: Mapping[int, tuple[str, str]], spec: DetectionSpec, now: datetime
) -> list[Stream]:
    """Every (cell, metric) stream over the look-back, request errors included, with its baselines.

    1. Observations: per (pass, probe version) over ``(now - history_s, now]``.
    2. Baselines: per probe version over the ``baseline_s`` before that.
    """
    start = now - timedelta(seconds=spec.history_s)
    base_start = start - timedelta(seconds=spec.baseline_s)
    rows: list[sa.Row[Any]] = []
    baselines: dict[Key, dict[int, Counts]] = defaultdict(dict)
    for builder in (_score_clusters, _run_clusters):
        rows += (await conn.execute(builder(start, now))).all()
        for row in (await conn.execute(_baseline(builder(base_start, start)))).all():
            tid, metric, probe, failing, n = tuple(row)
            baselines[(tid, metric)][probe] = Counts(int(failing), int(n))
    grouped: dict[Key, list[sa.Row[Any]]] = defaultdict(list)
    for row in rows:
        if row.target_id in names and _wanted(row.metric, spec):
            grouped[(row.target_id, row.metric)].append(row)
    out = []
    for (tid, metric), group in sorted(grouped.items()):
        group.sort(key=lambda r: (r.at, r.probe_pk))
        passes: dict[Any, int] = {}
        batch = np.array([passes.setdefault(r.pass_id, len(passes)) for r in group], dtype=np.int64)
        out.append(
            Stream(
                tid,
                names[tid][0],
                metric,
                np.array([r.at.timestamp() for r in group]),
                np.array([r.probe_pk for r in group], dtype=np.int64),
                np.array([r.n for r in group], dtype=np.int64),
                np.array([r.failures for r in group], dtype=np.int64),
                baselines.get((tid, metric), {}),
                batch,
            )
        )
    return out


async def per_probe(conn: AsyncConnection, since: datetime, now: datetime) -> dict[Key, dict[int, Counts]]:
    """Runs and failures per (cell, metric, probe version) over ``(since, now]``: the peer test's input."""
    out: dict[Key, dict[int, Counts]] = defaultdict(dict)
    for tid, metric, probe_pk, n, f in (
        await conn.execute(score_counts(since=since, until=now, closed="right", by_probe=True))
    ).all():
        out[(tid, metric)][probe_pk] = Counts(int(f), int(n))
    return out


async def window_counts(
    conn: AsyncConnection, metrics: Sequence[str], since: datetime, until: datetime
) -> dict[Key, Counts]:
    """Runs and failures per (cell, metric) in ``(since, until]`` for the named metrics."""
    q = score_counts(since=since, until=until, closed="right", metrics=list(metrics))
    return {(tid, m): Counts(int(f), int(n)) for tid, m, n, f in (await conn.execute(q)).all()}


async def last_runs(
    conn: AsyncConnection, cells: Sequence[str]
) -> dict[str, tuple[int, datetime | None, datetime | None, datetime]]:
    """Per configured cell with a row: (id, its newest run's start, its newest answered run's start,
    when it was first seen); ``None`` where there is no such run."""
    latest = (
        sa.select(
            RunRow.target_id,
            sa.func.max(RunRow.started_at).label("last"),
            sa.func.max(RunRow.started_at).filter(RunRow.status == "ok").label("last_ok"),
        )
        .group_by(RunRow.target_id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(TargetRow.id, TargetRow.cell, latest.c.last, latest.c.last_ok, TargetRow.first_seen)
        .outerjoin(latest, latest.c.target_id == TargetRow.id)
        .where(TargetRow.cell.in_(list(cells)))
    )
    return {cell: (tid, last, last_ok, first_seen) for tid, cell, last, last_ok, first_seen in rows.all()}


async def request_errors(conn: AsyncConnection, target_id: int, since: datetime, now: datetime) -> Counts:
    """One cell's request errors and requests over ``(since, now]``."""
    row = (
        await conn.execute(run_counts(since=since, until=now, closed="right", target_ids=[target_id]))
    ).first()
    return Counts(int(row.errors), int(row.runs)) if row is not None else Counts()
