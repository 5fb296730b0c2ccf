"""Alertmanager API v2: alerts pushed to ``POST /api/v2/alerts`` of one or several Alertmanagers.

Alertmanager treats a pushed alert as a lease: it stays active until its ``endsAt``. So, like
Prometheus, canary gives a firing alert ``endsAt`` = send time + 4 x ``resend_s`` and pushes it
again every ``resend_s`` while it fires (:mod:`canary.alerting.resend` enqueues the repeats in the
outbox); a resolved notice carries ``endsAt`` = the resolution time, which ends it at once. An
alert whose canary died ends by itself instead of firing forever.

Alertmanager identifies an alert by its label set, so a repeat or a retry updates the same alert.
A high-availability pair does not share alerts between its members (only silences and the
notification log), so every member gets every push. The delivery counts as made when at least
one member accepted it: the next repeat reaches a member that was down, and a member that missed
a resolution ends the alert at its ``endsAt``. Retrying the whole push instead would hold this
alert's resolved notice behind a member that may stay down for hours.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from canary.alerting.receivers.base import DeliveryResult, Receiver
from canary.config.receivers import ReceiverSpec
from canary.config.secrets import Secret, reveal

API_PATH = "/api/v2/alerts"
LEASES = 4  # resend periods an unrefreshed alert stays active (Prometheus uses the same factor)

Clock = Callable[[], datetime]


def _utc(value: str | datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the form Alertmanager writes back."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_body(notice: Mapping[str, Any], severity: str, ends_at: datetime) -> dict[str, Any]:
    """One stored notice as an Alertmanager v2 ``postableAlert``, firing until ``ends_at``.

    Labels: the notice's (alertname, cell, model, platform, pool, metric, kind) plus ``severity``;
    empty values are dropped because Alertmanager treats an empty label as an absent one.
    Annotations: the finding's one-line ``summary``, the ``evidence`` link and the notice's others.
    """
    labels = {k: str(v) for k, v in notice["labels"].items() if v not in (None, "")}
    labels["severity"] = severity
    annotations = {k: str(v) for k, v in notice["annotations"].items() if v not in (None, "")}
    link = notice.get("generatorURL") or ""
    if link:
        annotations["evidence"] = link
    resolved = notice["status"] == "resolved" and notice.get("endsAt")
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _utc(notice["startsAt"]),
        "endsAt": _utc(notice["endsAt"] if resolved else ends_at),
    }
    if link:
        alert["generatorURL"] = link
    return alert


class AlertmanagerReceiver(Receiver):
    """Pushes each notice to every configured Alertmanager (``urls``: base URLs, e.g. ``http://am:9093``)."""

    kind = "alertmanager"

    def __init__(
        self,
        spec: ReceiverSpec,
        url: Secret | str | None,
        secret: Secret | str | None = None,
        *,
        urls: Sequence[Secret | str] = (),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(spec, url, secret)
        self._urls = tuple(urls) or ((url,) if url is not None else ())
        self.clock = clock or (lambda: datetime.now(UTC))

    def render(self, notice: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        ends_at = self.clock() + timedelta(seconds=LEASES * self.spec.resend_s)
        return json.dumps([alert_body(notice, self.spec.severity, ends_at)]).encode(), {}

    async def send(self, notice: Mapping[str, Any], client: httpx.AsyncClient) -> DeliveryResult:
        """Push to every member; delivered when one accepted (see the module's docstring)."""
        results = [
            await self.post((reveal(u) or "").rstrip("/") + API_PATH, notice, client) for u in self._urls
        ]
        duration = sum(r.duration_ms for r in results)
        n = len(results)
        failed = [f"alertmanager {i + 1}/{n}: {r.error}" for i, r in enumerate(results) if not r.ok]
        error = "; ".join(failed) or None
        accepted = [r for r in results if r.ok]
        if accepted:
            return DeliveryResult(True, accepted[0].http_status, error, False, duration)
        permanent = all(r.permanent for r in results)
        return DeliveryResult(False, results[-1].http_status if results else None, error, permanent, duration)
