"""Alert receivers, one module per kind; :func:`build_receivers` turns resolved config into instances.

Public surface: :class:`Receiver`, :class:`DeliveryResult`, :class:`WebhookReceiver`,
:class:`SlackReceiver`, :class:`PagerDutyReceiver`, :class:`AlertmanagerReceiver`,
:func:`build_receivers`. The receivers' schema is :class:`canary.config.receivers.ReceiverSpec`;
their ``env:`` secrets are resolved when the configuration loads
(:func:`canary.config.receivers.resolve_receivers`).
"""

from __future__ import annotations

from collections.abc import Sequence

from canary.alerting.receivers.alertmanager import AlertmanagerReceiver
from canary.alerting.receivers.base import DeliveryResult, Receiver
from canary.alerting.receivers.pagerduty import EVENTS_URL, PagerDutyReceiver
from canary.alerting.receivers.slack import SlackReceiver
from canary.alerting.receivers.webhook import WebhookReceiver
from canary.config.receivers import ResolvedReceiver

KINDS: dict[str, type[Receiver]] = {
    "webhook": WebhookReceiver,
    "slack": SlackReceiver,
    "pagerduty": PagerDutyReceiver,
    "alertmanager": AlertmanagerReceiver,
}

__all__ = [
    "AlertmanagerReceiver",
    "DeliveryResult",
    "PagerDutyReceiver",
    "Receiver",
    "SlackReceiver",
    "WebhookReceiver",
    "build_receivers",
]


def build_receivers(resolved: Sequence[ResolvedReceiver]) -> dict[str, Receiver]:
    """Receiver instances by name (a receiver without a URL posts to its kind's default endpoint)."""
    return {r.name: _build(r) for r in resolved}


def _build(r: ResolvedReceiver) -> Receiver:
    if r.spec.kind == "alertmanager":
        return AlertmanagerReceiver(r.spec, r.url, urls=r.urls)
    return KINDS[r.spec.kind](r.spec, r.url if r.url is not None else EVENTS_URL, r.secret)
