"""What the status page reads: five queries on one connection, counts from the rollups only.

1. Cells and their per-metric counts: the last 15 minutes from ``score_rollup_minute`` and 26
   hours of ``score_rollup_hour`` (the baseline and the sparkline), aggregated per (cell,
   metric) in one statement, so 1,000 cells cost one scan of ~100k rollup rows, not millions
   of scores.
2. Open alerts with their finding's one-line message.
3. The latest failing samples of the unhealthy cells (the partial index on failed scores).
4. The latest deploys with their verdicts (``v_deploy_verdicts``).
5. Replicas and the leader (``pg_stat_activity``, ``pg_locks``) and the outbox backlog.
Everything is bound to ``now`` (the service's clock), so the page is reproducible in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
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
from canary.service.identity import LEADER_PREFIX, LOCK_KEY, REPLICA_PREFIX
from canary.storage.rollups import rollup_counts
from canary.storage.tables import TargetRow

SAMPLES_PER_CELL = 3
SAMPLE_CELLS = 100  # failing samples for at most this many unhealthy cells (the worst ones)
DEPLOYS = 8
RECENT_SLOT = -1


@dataclass(frozen=True)
class Replica:
    name: str  # host:pid
    connections: int
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


@dataclass
class StatusData:
    """Everything the page shows, read at ``now``."""

    now: datetime
    cells: list[CellHealth] = field(default_factory=list)
    alerts: list[OpenAlert] = field(default_factory=list)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    leader: Replica | None = None
    backlog: list[Backlog] = field(default_factory=list)


def counts_query(now: datetime) -> sa.Select[Any]:
    """Step 1: per (cell, metric) the recent and baseline sums and the hourly points as arrays."""
    recent_since, base_lo, base_hi, _ = windows(now)
    minutes = rollup_counts("minute", since=recent_since).subquery()
    hours = rollup_counts("hour", since=base_lo, until=now + timedelta(hours=1)).subquery()
    slot = sa.cast(sa.func.round(sa.extract("epoch", hours.c.bucket - base_lo) / 3600.0), sa.Integer)
    rows = sa.union_all(
        sa.select(minutes.c.target_id, minutes.c.metric, sa.literal(RECENT_SLOT).label("slot"),
                  minutes.c.n, minutes.c.failures),
        sa.select(hours.c.target_id, hours.c.metric, slot.label("slot"), hours.c.n, hours.c.failures),
    ).subquery()  # fmt: skip
    recent, hourly = rows.c.slot == RECENT_SLOT, rows.c.slot >= 0
    in_baseline = sa.and_(rows.c.slot >= 0, rows.c.slot < round((base_hi - base_lo) / timedelta(hours=1)))
    per_metric = (
        sa.select(
            rows.c.target_id,
            rows.c.metric,
            sa.func.coalesce(sa.func.sum(rows.c.n).filter(recent), 0).label("recent_runs"),
            sa.func.coalesce(sa.func.sum(rows.c.failures).filter(recent), 0).label("recent_failures"),
            sa.func.coalesce(sa.func.sum(rows.c.n).filter(in_baseline), 0).label("baseline_runs"),
            sa.func.coalesce(sa.func.sum(rows.c.failures).filter(in_baseline), 0).label("baseline_failures"),
            sa.func.array_agg(aggregate_order_by(rows.c.slot, rows.c.slot)).filter(hourly).label("slots"),
            sa.func.array_agg(aggregate_order_by(rows.c.n, rows.c.slot)).filter(hourly).label("runs"),
            sa.func.array_agg(aggregate_order_by(rows.c.failures, rows.c.slot)).filter(hourly).label("fails"),
        )
        .group_by(rows.c.target_id, rows.c.metric)
        .subquery()
    )
    shown = sa.or_(TargetRow.last_seen >= now - timedelta(days=7), per_metric.c.target_id.is_not(None))
    return (
        sa.select(TargetRow.id, TargetRow.cell, TargetRow.model, TargetRow.platform, TargetRow.pool,
                  *(c for c in per_metric.c if c.name != "target_id"))
        .select_from(TargetRow)
        .outerjoin(per_metric, per_metric.c.target_id == TargetRow.id)
        .where(shown)
    )  # fmt: skip


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
# Connections named by canary.service.identity; the lock holder is the leader.
REPLICAS_SQL = """
SELECT a.application_name AS name, count(*) AS connections, min(a.backend_start) AS since,
       bool_or(l.pid IS NOT NULL) AS leader
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
     AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1
WHERE a.datname = current_database() AND (a.application_name LIKE :replica OR a.application_name LIKE :leader)
GROUP BY a.application_name
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


def _metrics(row: Any, first_slot: int) -> list[MetricCounts]:
    if row.metric is None:
        return []
    points = [(0, 0)] * SPARK_HOURS
    for slot, runs, fails in zip(row.slots or (), row.runs or (), row.fails or (), strict=True):
        if first_slot <= slot < first_slot + SPARK_HOURS:
            points[slot - first_slot] = (runs, fails)
    return [
        MetricCounts(row.metric, int(row.recent_runs), int(row.recent_failures), int(row.baseline_runs),
                     int(row.baseline_failures), tuple(points))
    ]  # fmt: skip


async def _cells(conn: AsyncConnection, now: datetime, alerts: list[OpenAlert]) -> list[CellHealth]:
    first_slot = windows(now)[3]
    by_cell: dict[int, tuple[Any, list[MetricCounts]]] = {}
    for row in (await conn.execute(counts_query(now))).all():
        entry = by_cell.setdefault(row.id, (row, []))
        entry[1].extend(_metrics(row, first_slot))
    alerts_by_cell: dict[str, list[OpenAlert]] = {}
    for a in alerts:
        alerts_by_cell.setdefault(a.cell, []).append(a)
    return [
        judge(r.id, r.cell, r.model, r.platform, r.pool, metrics, alerts_by_cell.get(r.cell, []))
        for r, metrics in by_cell.values()
    ]


def _replicas(rows: Sequence[Any]) -> tuple[list[Replica], Replica | None]:
    """One entry per ``host:pid``: its pooled connections and, if it leads, its lock connection."""
    merged: dict[str, Replica] = {}
    for name, connections, since, holds_lock in rows:
        leader_conn = name.startswith(LEADER_PREFIX)
        key = name.removeprefix(LEADER_PREFIX if leader_conn else REPLICA_PREFIX)
        seen = merged.get(key)
        leads = bool(holds_lock) or (seen is not None and seen.leader)
        merged[key] = Replica(
            key,
            (seen.connections if seen else 0) + int(connections),
            min(since, seen.since) if seen else since,
            leads,
        )
    replicas = sorted(merged.values(), key=lambda r: (not r.leader, r.name))
    return replicas, next((r for r in replicas if r.leader), None)


async def load_status(engine: AsyncEngine, now: datetime) -> StatusData:
    """Read the page's state at ``now`` (one read-only connection; the steps of the module docstring)."""
    data = StatusData(now=now)
    async with engine.connect() as conn:
        for a in (await conn.execute(sa.text(ALERTS_SQL))).all():
            evidence = a.message or a.summary
            link = evidence_path(a.finding_id, a.fingerprint)
            data.alerts.append(OpenAlert(a.cell, a.metric, a.state, a.started_at, a.summary, evidence, link))
        data.cells = await _cells(conn, now, data.alerts)
        ids = [c.target_id for c in attention_order(data.cells)[:SAMPLE_CELLS]]
        samples = await conn.execute(sa.text(SAMPLES_SQL), {"ids": ids, "now": now})
        for s in samples.mappings().all():
            data.samples.setdefault(s["cell"], []).append(dict(s))
        data.deploys = [dict(d) for d in (await conn.execute(sa.text(DEPLOYS_SQL), {"now": now})).mappings()]
        params = {"lo": LOCK_KEY & 0xFFFFFFFF, "hi": LOCK_KEY >> 32,
                  "replica": REPLICA_PREFIX + "%", "leader": LEADER_PREFIX + "%"}  # fmt: skip
        data.replicas, data.leader = _replicas((await conn.execute(sa.text(REPLICAS_SQL), params)).all())
        data.backlog = [Backlog(*b) for b in (await conn.execute(sa.text(BACKLOG_SQL), {"now": now})).all()]
    return data
