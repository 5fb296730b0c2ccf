"""Alerts: one incident per (cell, metric), pending -> firing -> resolved, notified through an outbox.

:func:`evaluate_alerts` takes the findings of one detection round and, in one transaction, moves
every open alert through :func:`advance` and writes an ``alert_deliveries`` row per receiver for
each firing or resolved event; :class:`~canary.alerting.outbox.OutboxDispatcher` sends them.
The ``[alerts]`` schema is :class:`canary.config.sections.AlertsSpec`.

- ``for_s``: a (cell, metric) must keep having findings this long before it fires (pending first);
- ``resolve_after_s``: a firing alert resolves after this long without findings, so one clean
  evaluation in the middle of an incident does not produce a resolved/firing pair;
- the fingerprint is a hash of (alertname, cell, metric): the same incident is updated in place
  and at most one open alert per fingerprint exists (a partial unique index enforces it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.alerting.links import evidence_path
from canary.config.sections import AlertsSpec
from canary.detection.episodes import Finding
from canary.storage.tables import AlertDeliveryRow, AlertRow, TargetRow

__all__ = ["AlertChange", "AlertState", "advance", "evaluate_alerts", "fingerprint"]

ALERTNAME = "CanaryQualityRegression"
ALERTS: sa.Table = AlertRow.__table__  # type: ignore[assignment]
State = Literal["pending", "firing", "resolved"]
Event = Literal["firing", "resolved"]


def fingerprint(cell: str, metric: str) -> str:
    """Stable 16-hex id of a (cell, metric) alert, like Alertmanager's label fingerprint."""
    return hashlib.sha256(f"{ALERTNAME}\x00{cell}\x00{metric}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AlertState:
    state: State
    started_at: datetime
    fired_at: datetime | None
    last_active_at: datetime


def advance(
    current: AlertState | None, active: bool, now: datetime, spec: AlertsSpec
) -> tuple[AlertState | None, Event | None]:
    """The state machine: the next state of one alert and the event to notify, if any.

    1. No alert and no finding: nothing. A finding opens a pending alert (firing at once when
       ``for_s`` is 0).
    2. Pending with a finding: fire once it has been open ``for_s``; the only "firing" event.
    3. Firing with a finding: stays firing, silently (updated, never re-notified).
    4. Without a finding for ``resolve_after_s``: a firing alert resolves (the "resolved" event);
       a pending one closes silently, because nobody was told it existed.
    """
    if current is None or current.state == "resolved":
        if not active:
            return None, None
        current = AlertState("pending", now, None, now)
    if active:
        current = AlertState(current.state, current.started_at, current.fired_at, now)
        if current.state == "pending" and now - current.started_at >= timedelta(seconds=spec.for_s):
            return AlertState("firing", current.started_at, now, now), "firing"
        return current, None
    if now - current.last_active_at >= timedelta(seconds=spec.resolve_after_s):
        event: Event | None = "resolved" if current.state == "firing" else None
        return AlertState("resolved", current.started_at, current.fired_at, current.last_active_at), event
    return current, None


@dataclass(frozen=True)
class AlertChange:
    """What one evaluation did to one alert."""

    alert_id: int
    fingerprint: str
    cell: str
    metric: str
    state: State
    event: Event | None
    summary: str


# Availability and silence are alerts of their own kind: teams route them like probe_success; so
# is equivalence (the pool answers fluently, but not as the same model).
ALERTNAMES = {
    "availability": "CanaryAvailability",
    "no_data": "CanaryNoData",
    "equivalence": "CanaryEquivalence",
}


def labels_for(f: Finding, model: str, platform: str, pool: str) -> dict[str, str]:
    return {
        "alertname": ALERTNAMES.get(f.kind, ALERTNAME), "cell": f.cell, "model": model,
        "platform": platform, "pool": pool, "metric": f.metric, "kind": f.kind,
    }  # fmt: skip


def notice(row: sa.Row[Any], event: Event, now: datetime, spec: AlertsSpec) -> dict[str, Any]:
    """The receiver-neutral payload stored in the outbox (Alertmanager's alert object, plus URLs)."""
    base = spec.external_url.rstrip("/")
    # The API's evidence pages: the finding behind the alert, else the alert and its deliveries.
    page = evidence_path(row.finding_id, row.fingerprint)
    link = f"{base}/{page}" if base else ""
    annotations = {"summary": row.summary, "started": row.started_at.isoformat()}
    if event == "resolved":
        annotations["description"] = f"no finding since {row.last_active_at.isoformat()}"
    return {
        "status": event,
        "fingerprint": row.fingerprint,
        "labels": dict(row.labels),
        "annotations": annotations,
        "startsAt": (row.fired_at or row.started_at).isoformat(),
        "endsAt": now.isoformat() if event == "resolved" else None,
        "generatorURL": link,
        "externalURL": spec.external_url,
    }


async def _cells(conn: AsyncConnection) -> dict[int, tuple[str, str, str, str]]:
    rows = await conn.execute(
        sa.select(TargetRow.id, TargetRow.cell, TargetRow.model, TargetRow.platform, TargetRow.pool)
    )
    return {tid: (cell, model, platform, pool) for tid, cell, model, platform, pool in rows.all()}


async def evaluate_alerts(
    engine: AsyncEngine, findings: Sequence[Finding], spec: AlertsSpec, now: datetime
) -> list[AlertChange]:
    """Advance every alert with this round's findings; alert changes and outbox rows commit together.

    1. Serialise evaluations across replicas with a transaction-level advisory lock.
    2. Per (cell, metric), keep the strongest finding (smallest p-value) as the alert's evidence.
    3. Lock the open alerts, advance each (and open new ones) with :func:`advance`.
    4. For each firing/resolved event insert one delivery per receiver that wants it.
    """
    strongest: dict[tuple[int, str], Finding] = {}
    for f in findings:
        key = (f.target_id, f.metric)
        if key not in strongest or f.p_value < strongest[key].p_value:
            strongest[key] = f
    changes: list[AlertChange] = []
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('canary.evaluate_alerts'))"))
        open_rows = await conn.execute(
            sa.select(ALERTS).where(ALERTS.c.state.in_(("pending", "firing"))).with_for_update()
        )
        alerts = {(a.target_id, a.metric): a for a in open_rows.all()}
        cells = await _cells(conn) if strongest else {}
        for key in sorted(set(alerts) | set(strongest)):
            row, finding = alerts.get(key), strongest.get(key)
            current = (
                None
                if row is None
                else AlertState(row.state, row.started_at, row.fired_at, row.last_active_at)
            )
            nxt, event = advance(current, finding is not None, now, spec)
            if nxt is None:
                continue
            values: dict[str, Any] = {
                "state": nxt.state, "started_at": nxt.started_at, "fired_at": nxt.fired_at,
                "last_active_at": nxt.last_active_at, "last_evaluated_at": now,
                "resolved_at": now if nxt.state == "resolved" else None,
            }  # fmt: skip
            if finding is not None:
                _, model, platform, pool = cells[finding.target_id]
                values |= {"finding_id": finding.id, "summary": finding.message,
                           "labels": labels_for(finding, model, platform, pool)}  # fmt: skip
            if row is None:
                assert finding is not None
                values |= {
                    "fingerprint": fingerprint(finding.cell, finding.metric),
                    "target_id": key[0],
                    "metric": key[1],
                }
                stmt: sa.Executable = sa.insert(ALERTS).values(**values).returning(*ALERTS.c)
            else:
                stmt = sa.update(ALERTS).where(ALERTS.c.id == row.id).values(**values).returning(*ALERTS.c)
            saved = (await conn.execute(stmt)).one()
            if event is not None:
                await _enqueue(conn, saved, event, now, spec)
            changes.append(
                AlertChange(
                    saved.id,
                    saved.fingerprint,
                    saved.labels.get("cell", ""),
                    saved.metric,
                    nxt.state,
                    event,
                    saved.summary,
                )
            )
    return changes


async def _enqueue(
    conn: AsyncConnection, alert: sa.Row[Any], event: Event, now: datetime, spec: AlertsSpec
) -> None:
    payload = notice(alert, event, now, spec)
    rows = [
        {
            "alert_id": alert.id,
            "receiver": r.name,
            "event": event,
            "payload": payload,
            "next_attempt_at": now,
            "created_at": now,
        }
        for r in spec.receivers
        if event == "firing" or r.send_resolved
    ]
    if rows:
        await conn.execute(sa.insert(AlertDeliveryRow), rows)
