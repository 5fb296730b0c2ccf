"""Repeat pushes of firing alerts to Alertmanager receivers, through the outbox.

An alert pushed to Alertmanager ends at its ``endsAt`` unless pushed again
(:mod:`canary.alerting.receivers.alertmanager`). Each detection round therefore enqueues one more
``firing`` delivery per firing alert and Alertmanager receiver whose last delivery is
``resend_s`` old; the dispatcher sends it like any other notice, with retries and leases.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import ALERTS, notice
from canary.config.sections import AlertsSpec
from canary.storage.tables import AlertDeliveryRow as D

__all__ = ["enqueue_resends"]

# A round that comes a moment before the period is up still resends, instead of waiting a period.
EARLY = 0.1


async def enqueue_resends(engine: AsyncEngine, spec: AlertsSpec, now: datetime) -> int:
    """Enqueue the repeats due at ``now``; returns how many.

    1. Take the lock :func:`~canary.alerting.incidents.evaluate_alerts` takes, so a repeat never
       races an alert change (a repeat of an alert that just resolved).
    2. Per Alertmanager receiver, select the firing alerts with no pending delivery to it (a
       receiver that is down gets one row retried, not a pile) and none created in the last
       ``resend_s``.
    3. Insert a ``firing`` delivery for each, with the alert's current notice.
    """
    receivers = [r for r in spec.receivers if r.kind == "alertmanager"]
    if not receivers:
        return 0
    count = 0
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('canary.evaluate_alerts'))"))
        for r in receivers:
            since = now - timedelta(seconds=r.resend_s * (1.0 - EARLY))
            recent = sa.exists().where(
                D.alert_id == ALERTS.c.id,
                D.receiver == r.name,
                sa.or_(D.status == "pending", D.created_at > since),
            )
            alerts = (await conn.execute(sa.select(ALERTS).where(ALERTS.c.state == "firing", ~recent))).all()
            rows: list[dict[str, Any]] = [
                {
                    "alert_id": a.id,
                    "receiver": r.name,
                    "event": "firing",
                    "payload": notice(a, "firing", now, spec),
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for a in alerts
            ]
            if rows:
                await conn.execute(sa.insert(D), rows)
            count += len(rows)
    return count
