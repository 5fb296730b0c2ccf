"""What the status page reads: seven small queries on one connection, counts from the rollups only.

1. Open alerts with their finding's one-line message.
2. Cells and their per-metric counts: the last 15 minutes from ``score_rollup_minute`` and the
   24-hour baseline from ``score_rollup_hour``, summed per (cell, metric) in one statement, so
   1,000 cells cost one pass over ~200k rollup rows, not millions of scores.
3. For the worst :data:`DETAILED_CELLS` unhealthy cells only: 24 hourly points per metric (the
   sparklines) and the latest failing samples (the partial index on failed scores).
4. The latest deploys with their verdicts (``v_deploy_verdicts``).
5. The live replicas and the leader (``replicas``, ``cell_claims``, ``leader_lease``); the outbox backlog.
6. Per cell, its latest equivalence finding of the last 7 days (open ones first).
Everything is bound to ``now`` (the service's clock), so the page is reproducible in tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.alerting.links import evidence_path
from canary.service.health import (
    SPARK_HOURS,
    CellHealth,
    MetricCounts,
    OpenAlert,
    attention_order,
    judge,
    windows,
)
from canary.service.membership import REPLICAS_SQL
from canary.service.sparkline import Point
from canary.storage.rollups import rollup_counts
from canary.storage.tables import TargetRow

SAMPLES_PER_CELL = 3
DETAILED_CELLS = 30  # sparklines and samples for at most this many unhealthy cells (the worst ones)
DEPLOYS = 8
Hourly = dict[str, list[Point]]  # metric -> SPARK_HOURS points, oldest first


@dataclass(frozen=True)
class Replica:
    name: str  # host:pid
    cells: int  # cells it holds a claim on
    since: datetime
    leader: bool


@dataclass(frozen=True)
class Backlog:
    """Undelivered notifications of one receiver."""

    receiver: str
    pending: int  # still being retried
    oldest: datetime | None
    last_error: str | None
    given_up: int  # failed permanently or gave up, in the last 24 hours


@dataclass(frozen=True)
class EquivalenceRow:
    """A cell's latest equivalence finding: is the model on this pool the same model as its peers'?"""

    finding_id: int
    cell: str
    metric: str  # equivalence.forced, .greedy or .sampled
    open: bool  # still found at the page's clock
    effect: float
    statistic: str  # the test's name (and, for greedy, where answers leave the consensus)
    p_value: float
    n: int  # tokens, answers or sample steps
    since: datetime
    resolved_at: datetime | None


@dataclass
class StatusData:
    """Everything the page shows, read at ``now``."""

    now: datetime
    cells: list[CellHealth] = field(default_factory=list)
    alerts: list[OpenAlert] = field(default_factory=list)
    hourly: dict[str, Hourly] = field(default_factory=dict)  # cell -> its sparklines' points
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    leader: Replica | None = None
    backlog: list[Backlog] = field(default_factory=list)
    equivalence: list[EquivalenceRow] = field(default_factory=list)


def recent_query(now: datetime) -> sa.Select[Any]:
    """Step 2a: every cell, with its metrics' last 15 minutes as arrays (~75k minute rows at 1,000 cells).

    One row per cell rather than per (cell, metric): the page's own cost is per row fetched.
    """
    recent_since = windows(now)[0]
    minutes = rollup_counts("minute", since=recent_since).subquery()
    per_metric = (
        sa.select(minutes.c.target_id, minutes.c.metric, sa.func.sum(minutes.c.n).label("runs"),
                  sa.func.sum(minutes.c.failures).label("failures"))
        .group_by(minutes.c.target_id, minutes.c.metric)
        .subquery()
    )  # fmt: skip
    per_cell = (
        sa.select(per_metric.c.target_id, sa.func.array_agg(per_metric.c.metric).label("metrics"),
                  sa.func.array_agg(per_metric.c.runs).label("runs"),
                  sa.func.array_agg(per_metric.c.failures).label("failures"))
        .group_by(per_metric.c.target_id)
        .subquery()
    )  # fmt: skip
    return (
        sa.select(TargetRow.id, TargetRow.cell, TargetRow.model, TargetRow.platform, TargetRow.pool,
                  TargetRow.last_seen, per_cell.c.metrics, per_cell.c.runs, per_cell.c.failures)
        .select_from(TargetRow)
        .outerjoin(per_cell, per_cell.c.target_id == TargetRow.id)
    )  # fmt: skip


def baseline_query(now: datetime) -> sa.Select[Any]:
    """Step 2b: per (cell, metric) the 24 baseline hours (~120k hour rows for 1,000 cells)."""
    _, base_lo, base_hi, _ = windows(now)
    hours = rollup_counts("hour", since=base_lo, until=base_hi).subquery()
    return sa.select(
        hours.c.target_id, hours.c.metric, sa.func.sum(hours.c.n), sa.func.sum(hours.c.failures)
    ).group_by(hours.c.target_id, hours.c.metric)


Baseline = dict[int, dict[str, tuple[int, int]]]  # target_id -> metric -> (runs, failures)


@dataclass
class BaselineCache:
    """The baseline sums, read once per baseline window and kept for at most ``ttl_s``.

    The baseline is the 24 whole hours before the current window, so it only moves when the
    hour turns; re-reading it every ``ttl_s`` picks up the rare late row the rollup refresher
    counts into an old hour. Most renders then read only the 15 minutes of minute rollups.
    """

    ttl_s: float = 600.0
    window: datetime | None = None
    read_at: float = 0.0
    sums: Baseline = field(default_factory=dict)

    async def get(self, conn: AsyncConnection, now: datetime) -> Baseline:
        window = windows(now)[2]
        if window != self.window or time.monotonic() - self.read_at > self.ttl_s:
            rows = (await conn.execute(baseline_query(now))).all()
            self.sums = {}
            for t, m, n, f in rows:
                self.sums.setdefault(t, {})[m] = (int(n), int(f))
            self.window, self.read_at = window, time.monotonic()
        return self.sums


ALERTS_SQL = """
SELECT a.target_id, t.cell, a.metric, a.state, a.started_at, a.summary, a.fingerprint, a.finding_id,
       f.message
FROM alerts a JOIN targets t ON t.id = a.target_id LEFT JOIN findings f ON f.id = a.finding_id
WHERE a.state IN ('pending', 'firing')
ORDER BY a.state = 'firing' DESC, a.started_at
"""
SAMPLES_SQL = f"""
SELECT f.time, f.cell, f.metric, f.probe_id, f.offending, f.explanation, f.output
FROM unnest(CAST(:ids AS int[])) AS u(target_id)
CROSS JOIN LATERAL (
    SELECT * FROM v_failed_samples s
    WHERE s.target_id = u.target_id AND s.time > :now - interval '24 hours' AND s.time <= :now
    ORDER BY s.time DESC LIMIT {SAMPLES_PER_CELL}
) f
"""
DEPLOYS_SQL = f"""
SELECT id, name, verdict, reason, started_at, ends_at, canary_cells, baseline_cells, failed_metrics, metrics
FROM v_deploy_verdicts WHERE NOT annotation_only AND started_at <= :now
ORDER BY started_at DESC LIMIT {DEPLOYS}
"""
EQUIVALENCE_SQL = """
SELECT DISTINCT ON (f.target_id) f.id, f.cell, f.metric,
       f.resolved_at IS NULL OR f.resolved_at > :now AS open, f.effect,
       coalesce(f.details->>'statistic', '') AS statistic, f.p_value, f.n_observed, f.created_at,
       f.resolved_at
FROM findings f
WHERE f.kind = 'equivalence' AND f.created_at <= :now
  AND (f.resolved_at IS NULL OR f.resolved_at > :now - interval '7 days')
ORDER BY f.target_id, f.resolved_at IS NULL OR f.resolved_at > :now DESC, f.updated_at DESC
"""
BACKLOG_SQL = """
SELECT receiver, count(*) FILTER (WHERE status = 'pending') AS pending,
       min(created_at) FILTER (WHERE status = 'pending') AS oldest,
       (array_agg(last_error ORDER BY id DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error,
       count(*) FILTER (WHERE status IN ('failed', 'gave_up') AND created_at > :now - interval '24 hours')
           AS given_up
FROM alert_deliveries
WHERE status = 'pending' OR (status IN ('failed', 'gave_up') AND created_at > :now - interval '24 hours')
GROUP BY receiver ORDER BY receiver
"""


async def _cells(
    conn: AsyncConnection, now: datetime, alerts: list[OpenAlert], baselines: BaselineCache
) -> list[CellHealth]:
    """Judge every shown cell: seen in 7 days, or scored in the window, or alerting (as the view)."""
    baseline = await baselines.get(conn, now)
    rows = (await conn.execute(recent_query(now))).all()
    alerts_by_cell: dict[str, list[OpenAlert]] = {}
    for a in alerts:
        alerts_by_cell.setdefault(a.cell, []).append(a)
    seen_since = now - timedelta(days=7)
    cells = []
    # Plain tuples: attribute access per row costs more than the query.
    for tid, cell, model, platform, pool, last_seen, names, runs, failures in rows:
        now_counts = dict(zip(names, zip(runs, failures, strict=True), strict=True)) if names else {}
        base_counts = baseline.get(tid, {})
        metrics = []
        for m in now_counts.keys() | base_counts.keys():
            (n, f), (bn, bf) = now_counts.get(m, (0, 0)), base_counts.get(m, (0, 0))
            metrics.append(MetricCounts(m, n, f, bn, bf))
        cell_alerts = alerts_by_cell.get(cell, [])
        if now_counts or cell_alerts or (last_seen is not None and last_seen >= seen_since):
            cells.append(judge(tid, cell, model, platform, pool, metrics, cell_alerts))
    return cells


async def _hourly(conn: AsyncConnection, now: datetime, cells: Sequence[CellHealth]) -> dict[str, Hourly]:
    """Step 3: the sparklines' points of ``cells`` (their primary-key range of the hour rollup)."""
    spark_lo = windows(now)[3]
    names = {c.target_id: c.cell for c in cells}
    hours = rollup_counts(
        "hour", since=spark_lo, until=spark_lo + timedelta(hours=SPARK_HOURS), target_ids=list(names)
    ).subquery()
    slot = sa.cast(sa.func.round(sa.extract("epoch", hours.c.bucket - spark_lo) / 3600.0), sa.Integer)
    query = sa.select(hours.c.target_id, hours.c.metric, slot, hours.c.n, hours.c.failures)
    out: dict[str, Hourly] = {}
    for target_id, metric, hour, n, failures in (await conn.execute(query)).all():
        points = out.setdefault(names[target_id], {}).setdefault(metric, [Point(0, 0)] * SPARK_HOURS)
        points[hour] = Point(n, failures)
    return out


def _replicas(rows: Sequence[Any]) -> tuple[list[Replica], Replica | None]:
    """The live replicas, the leader first; and the leader."""
    live = [Replica(f"{r.host}:{r.pid}", int(r.cells), r.started_at, bool(r.leader)) for r in rows if r.live]
    replicas = sorted(live, key=lambda r: (not r.leader, r.name))
    return replicas, next((r for r in replicas if r.leader), None)


async def load_status(
    engine: AsyncEngine, now: datetime, baselines: BaselineCache | None = None
) -> StatusData:
    """Read the page's state at ``now`` (one read-only connection; the steps of the module docstring).

    ``baselines`` keeps the baseline sums between calls (a fresh cache reads them every time).
    """
    data = StatusData(now=now)
    async with engine.connect() as conn:
        # Each statement reads at most ~100k rollup rows: parallel workers cost more CPU than
        # they save, and on a busy host they wait for a core.
        await conn.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
        for a in (await conn.execute(sa.text(ALERTS_SQL))).all():
            evidence = a.message or a.summary
            link = evidence_path(a.finding_id, a.fingerprint)
            data.alerts.append(OpenAlert(a.cell, a.metric, a.state, a.started_at, a.summary, evidence, link))
        data.cells = await _cells(conn, now, data.alerts, baselines or BaselineCache())
        worst = attention_order(data.cells)[:DETAILED_CELLS]
        data.hourly = await _hourly(conn, now, worst)
        ids = [c.target_id for c in worst]
        samples = await conn.execute(sa.text(SAMPLES_SQL), {"ids": ids, "now": now})
        for s in samples.mappings().all():
            data.samples.setdefault(s["cell"], []).append(dict(s))
        data.deploys = [dict(d) for d in (await conn.execute(sa.text(DEPLOYS_SQL), {"now": now})).mappings()]
        data.replicas, data.leader = _replicas((await conn.execute(sa.text(REPLICAS_SQL))).all())
        data.backlog = [Backlog(*b) for b in (await conn.execute(sa.text(BACKLOG_SQL), {"now": now})).all()]
        rows = (await conn.execute(sa.text(EQUIVALENCE_SQL), {"now": now})).all()
        data.equivalence = sorted((EquivalenceRow(*r) for r in rows), key=lambda r: (not r.open, r.cell))
    return data
