"""Alert receivers, one module per kind; :func:`build_receivers` turns config into instances.

Public surface: :class:`Receiver`, :class:`DeliveryResult`, :class:`ReceiverSpec`,
:class:`WebhookReceiver`, :class:`SlackReceiver`, :class:`PagerDutyReceiver`, :func:`build_receivers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from canary.alerting.receivers.base import DeliveryResult, Receiver, ReceiverSpec
from canary.alerting.receivers.pagerduty import EVENTS_URL, PagerDutyReceiver
from canary.alerting.receivers.slack import SlackReceiver
from canary.alerting.receivers.webhook import WebhookReceiver
from canary.config.loader import Secret, resolve_secret
from canary.errors import ConfigError

KINDS: dict[str, type[Receiver]] = {
    "webhook": WebhookReceiver,
    "slack": SlackReceiver,
    "pagerduty": PagerDutyReceiver,
}

__all__ = [
    "DeliveryResult",
    "PagerDutyReceiver",
    "Receiver",
    "ReceiverSpec",
    "SlackReceiver",
    "WebhookReceiver",
    "build_receivers",
]


def build_receivers(specs: Sequence[ReceiverSpec], path: Path | str) -> dict[str, Receiver]:
    """Instances by name, with ``env:NAME`` URLs and keys resolved (unset variables are config errors)."""
    out: dict[str, Receiver] = {}
    for i, spec in enumerate(specs):
        key = f"alerts.receivers[{i}]"
        if spec.name in out:
            raise ConfigError(path, f"{key}.name", f"duplicate receiver name '{spec.name}'")
        url = resolve_secret(spec.url, path, f"{key}.url") if spec.url else EVENTS_URL
        secret: Secret | str | None
        if spec.kind == "pagerduty":
            secret = resolve_secret(spec.routing_key or "", path, f"{key}.routing_key")
        else:
            secret = resolve_secret(spec.secret, path, f"{key}.secret") if spec.secret else None
        out[spec.name] = KINDS[spec.kind](spec, url, secret)
    return out
