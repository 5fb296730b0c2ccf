"""Generic webhook in the Alertmanager webhook format (version 4), optionally HMAC-signed.

Anything that accepts Alertmanager's webhook (alerta, karma, custom handlers) accepts this. With
``secret`` set, ``X-Canary-Signature: t=<unix seconds>,v1=<hex>`` carries HMAC-SHA256 of
``<t>.<body bytes>`` (the scheme Stripe and Slack use), so the receiver can check that the alert
came from this canary, was not altered, and is not an old message replayed: it rejects a ``t``
outside its tolerance (the README's snippet uses five minutes). ``t`` is the moment of sending, so
each retry carries a fresh one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from canary.alerting.receivers.base import Receiver
from canary.config.secrets import reveal

SIGNATURE_HEADER = "X-Canary-Signature"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended" endsAt


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``t=<unix>,v1=<hex HMAC>``.

    The HMAC covers ``b"<timestamp>." + body``, so the timestamp cannot be changed without the key.
    """
    signed = str(timestamp).encode() + b"." + body
    return f"t={timestamp},v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def alertmanager_body(notice: Mapping[str, Any], receiver: str) -> dict[str, Any]:
    """One notice as an Alertmanager v4 webhook message holding a single alert."""
    labels = dict(notice["labels"])
    group = {k: labels[k] for k in ("alertname", "cell", "metric") if k in labels}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}"
    alert = {
        "status": notice["status"],
        "labels": labels,
        "annotations": dict(notice["annotations"]),
        "startsAt": notice["startsAt"],
        "endsAt": notice.get("endsAt") or ZERO_TIME,
        "generatorURL": notice.get("generatorURL", ""),
        "fingerprint": notice["fingerprint"],
    }
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": notice["status"],
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": dict(notice["annotations"]),
        "externalURL": notice.get("externalURL", ""),
        "alerts": [alert],
    }


class WebhookReceiver(Receiver):
    kind = "webhook"

    def render(self, notice: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(alertmanager_body(notice, self.name), separators=(",", ":")).encode()
        secret = reveal(self._secret)
        return body, ({SIGNATURE_HEADER: sign(body, secret, int(time.time()))} if secret else {})
