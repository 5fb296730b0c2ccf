"""One detection round: detect -> evaluate alerts -> dispatch, the same for ``canary detect`` and the service.

:func:`detection_round` is the only place that chains the three stages, so the command and the
service's leader cannot drift apart in what a round does or in what it reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import AlertChange, evaluate_alerts
from canary.alerting.outbox import OutboxDispatcher
from canary.alerting.resend import enqueue_resends
from canary.config.sections import AlertsSpec, DetectionSpec
from canary.detection.detect import Finding, detect

__all__ = ["RoundResult", "detection_round"]


@dataclass(frozen=True)
class RoundResult:
    """What one round found, changed and sent."""

    findings: list[Finding]
    changes: list[AlertChange]
    attempted: int  # notifications attempted by this round's dispatch


async def detection_round(
    engine: AsyncEngine,
    detection: DetectionSpec,
    alerts: AlertsSpec,
    dispatcher: OutboxDispatcher | None,
    now: datetime,
    expected: Mapping[str, float] | None = None,
) -> RoundResult:
    """One round at ``now``.

    1. Detect over the stored runs and scores (:func:`canary.detection.detect.detect`), the
       ``expected`` cells (name -> probe interval) checked for silence; findings are stored.
    2. Advance every alert with those findings; the outbox rows commit with the alert changes
       (:func:`canary.alerting.incidents.evaluate_alerts`).
    3. Enqueue the repeat pushes of firing alerts that Alertmanager receivers are due
       (:func:`canary.alerting.resend.enqueue_resends`).
    4. Send what is due now, this round's notifications included, when a dispatcher is given.
       Anything that fails stays in the outbox for the next dispatch (its own retry schedule).
    """
    findings = await detect(engine, detection, now, expected=expected)
    changes = await evaluate_alerts(engine, findings, alerts, now)
    await enqueue_resends(engine, alerts, now)
    attempted = await dispatcher.dispatch_once(engine, now) if dispatcher is not None else 0
    return RoundResult(findings, changes, attempted)
