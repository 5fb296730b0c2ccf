"""The one failure-count query: scores and failures per (cell, metric[, probe version][, session][, bucket]).

Detection, deploy verdicts, the API's ``/api/results`` and the dashboard rollups all read their
rates through :func:`score_counts`, so the words mean one thing everywhere:

- ``n`` counts scores: one per scored run of that metric. A run that never got an answer
  (timeout, 5xx, rate limit, cancelled at shutdown) is not scored at all, so it is neither in
  ``n`` nor a failure; such runs are request errors, counted from ``runs`` by :func:`run_counts`.
- ``failures`` counts the scores with ``passed = false``.
- Every scored run counts, whatever its tags: runs a deploy burst on either side
  (``deploy_id`` set) count like scheduled ones, and so do all sessions.

Both builders return a SQLAlchemy Core ``Select`` whose columns are, in order,
``target_id, metric, [probe_pk], [session_key], [bucket], n, failures`` (scores) or
``target_id, [bucket], runs, errors`` (runs): callers execute it, wrap it (``.subquery()``,
``insert().from_select()``) or order it.

The arguments are plain values, so a reader over the rollup tables (which store exactly the
``CalendarBuckets`` rows of :func:`score_counts`) can take the same ones and return the same
columns. Two things stand between detection and that reader: :class:`AgeBuckets`, detection's
bins counted back from ``now``, map onto rollup minutes only when ``now`` and the width fall on
whole minutes; and the rollups keep no probe version or session, so ``by_probe`` and
``by_session`` counts still need ``scores``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute

from canary.storage.tables import RunRow, ScoreRow, TargetRow

__all__ = [
    "AgeBuckets",
    "Buckets",
    "CalendarBuckets",
    "Closed",
    "Grain",
    "failed",
    "run_counts",
    "run_of_score",
    "score_counts",
]

Closed = Literal["left", "right"]  # "left": since <= t < until; "right": since < t <= until
Grain = Literal["minute", "hour"]
# Grouped by its output name: the expression holds bind parameters (detection's ``now``), and
# PostgreSQL would not see two separately bound copies of it as the same expression. (A GROUP BY
# name means an input column first; neither ``scores`` nor ``runs`` has one called ``bucket``.)
BUCKET: sa.ColumnElement[Any] = sa.literal_column("bucket")
Key = sa.ColumnElement[Any] | QueryableAttribute[Any]


@dataclass(frozen=True)
class CalendarBuckets:
    """UTC minutes or hours (``date_trunc`` in UTC), the grain of the rollup tables.

    ``bucket`` is the bucket's start, a ``timestamptz``; cut in UTC whatever the session's time
    zone, so the rows equal the rollups wherever the query runs.
    """

    grain: Grain


@dataclass(frozen=True)
class AgeBuckets:
    """Whole ``width_s`` steps back from ``now``: ``bucket`` 0 holds ``(now - width_s, now]``.

    This is how detection bins its window and baseline, newest bin first.
    """

    now: datetime
    width_s: float


Buckets = CalendarBuckets | AgeBuckets


def run_of_score() -> sa.ColumnElement[bool]:
    """The join of a score to its run: by id and by the partition key, so one partition is read."""
    return sa.and_(RunRow.id == ScoreRow.run_id, RunRow.started_at == ScoreRow.created_at)


def failed() -> sa.ColumnElement[bool]:
    """What a failure is, for every count: a score that did not pass."""
    return sa.not_(ScoreRow.passed)


def _bucket(column: QueryableAttribute[datetime], buckets: Buckets) -> sa.ColumnElement[Any]:
    if isinstance(buckets, CalendarBuckets):
        return sa.func.date_trunc(buckets.grain, column, "UTC", type_=sa.DateTime(timezone=True))
    age = sa.extract("epoch", sa.literal(buckets.now, sa.DateTime(timezone=True)) - column)
    return sa.func.floor(age / float(buckets.width_s)).cast(sa.Integer)


def _window(
    column: QueryableAttribute[datetime], since: datetime | None, until: datetime | None, closed: Closed
) -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    if since is not None:
        out.append(column >= since if closed == "left" else column > since)
    if until is not None:
        out.append(column < until if closed == "left" else column <= until)
    return out


def _cells(
    target_id: QueryableAttribute[int], cells: Sequence[str] | None, target_ids: Sequence[int] | None
) -> list[sa.ColumnElement[bool]]:
    """Filters on the cell; an empty list selects nothing (``None`` selects every cell)."""
    out: list[sa.ColumnElement[bool]] = []
    if cells is not None:
        out.append(target_id.in_(sa.select(TargetRow.id).where(TargetRow.cell.in_(list(cells)))))
    if target_ids is not None:
        out.append(target_id.in_(list(target_ids)))
    return out


def score_counts(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    closed: Closed = "left",
    cells: Sequence[str] | None = None,
    target_ids: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    by_probe: bool = False,
    by_session: bool = False,
    by_pass: bool = False,
    buckets: Buckets | None = None,
) -> sa.Select[Any]:
    """Scores and failures per (cell, metric) over ``scores.created_at`` in the window.

    ``since``/``until`` bound the window (either may be left open); ``closed`` says which end
    is inclusive. ``cells`` (names) and ``target_ids`` narrow the cells, ``metrics`` the metrics
    (exact names). ``by_probe`` adds ``probe_pk`` (the probe version), ``by_session`` adds the
    run's ``session_key`` (runs without one form a ``NULL`` group), ``by_pass`` adds the run's
    ``pass_id`` and, after ``failures``, ``at`` (the group's first ``created_at``): one row per
    clustered observation (a pass's repeats of a probe). ``buckets`` adds ``bucket``. Only
    ``by_session`` and ``by_pass`` join ``runs``; everything else is on ``scores`` alone, whose
    ``target_id``/``probe_pk``/``created_at`` are copies of the run's.
    """
    keys: list[Key] = [ScoreRow.target_id, ScoreRow.metric]
    if by_probe:
        keys.append(ScoreRow.probe_pk)
    if by_session:
        keys.append(RunRow.session_key)
    if by_pass:
        keys.append(RunRow.pass_id)
    columns = list(keys)
    if buckets is not None:
        columns.append(_bucket(ScoreRow.created_at, buckets).label("bucket"))
        keys.append(BUCKET)
    extra = [sa.func.min(ScoreRow.created_at).label("at")] if by_pass else []
    query = sa.select(
        *columns, sa.func.count().label("n"), sa.func.count().filter(failed()).label("failures"), *extra
    ).select_from(ScoreRow)
    conditions = [
        *_window(ScoreRow.created_at, since, until, closed),
        *_cells(ScoreRow.target_id, cells, target_ids),
    ]
    if by_session or by_pass:
        query = query.join(RunRow, run_of_score())
        # The same window on the run's start (equal to the score's time): without it PostgreSQL
        # cannot prune ``runs`` to the window's partitions and reads every day of it.
        conditions += _window(RunRow.started_at, since, until, closed)
    if metrics is not None:
        conditions.append(ScoreRow.metric.in_(list(metrics)))
    return query.where(*conditions).group_by(*keys)


def run_counts(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    closed: Closed = "left",
    cells: Sequence[str] | None = None,
    target_ids: Sequence[int] | None = None,
    by_probe: bool = False,
    by_pass: bool = False,
    buckets: Buckets | None = None,
) -> sa.Select[Any]:
    """Requests and request errors per cell over ``runs.started_at``: the companion of :func:`score_counts`.

    A request error is a run with ``status = 'error'`` (what :mod:`canary.errors` names in
    ``reason``). Runs cancelled at shutdown are left out of both counts: they say nothing about
    the cell. The arguments mean what they mean for :func:`score_counts` (columns
    ``target_id, [probe_pk], [pass_id], [bucket], runs, errors, [at]``).
    """
    columns: list[Key] = [RunRow.target_id]
    if by_probe:
        columns.append(RunRow.probe_pk)
    if by_pass:
        columns.append(RunRow.pass_id)
    keys = list(columns)
    if buckets is not None:
        columns.append(_bucket(RunRow.started_at, buckets).label("bucket"))
        keys.append(BUCKET)
    extra = [sa.func.min(RunRow.started_at).label("at")] if by_pass else []
    query = sa.select(
        *columns,
        sa.func.count().label("runs"),
        sa.func.count().filter(RunRow.status == "error").label("errors"),
        *extra,
    ).where(
        RunRow.reason.is_distinct_from("cancelled"),
        *_window(RunRow.started_at, since, until, closed),
        *_cells(RunRow.target_id, cells, target_ids),
    )
    return query.group_by(*keys)
