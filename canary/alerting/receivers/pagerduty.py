"""PagerDuty Events API v2: ``trigger`` on firing, ``resolve`` on resolved, deduplicated by fingerprint.

``dedup_key`` is the alert fingerprint, so a repeated trigger (a retry after a lost response)
updates the same PagerDuty incident instead of paging twice. The routing key is a secret resolved
from the environment at start-up and only ever placed in the request body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from canary.alerting.receivers.base import Receiver
from canary.config.secrets import reveal

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024  # the Events API rejects longer summaries


class PagerDutyReceiver(Receiver):
    kind = "pagerduty"

    def render(self, notice: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        labels = notice["labels"]
        body: dict[str, Any] = {
            "routing_key": reveal(self._secret),
            "event_action": "trigger" if notice["status"] == "firing" else "resolve",
            "dedup_key": notice["fingerprint"],
            "client": "canary",
        }
        if notice["status"] == "firing":
            body["payload"] = {
                "summary": str(notice["annotations"].get("summary", ""))[:MAX_SUMMARY],
                "source": labels.get("cell", "canary"),
                "severity": self.spec.severity,
                "timestamp": notice["startsAt"],
                "component": labels.get("metric"),
                "group": labels.get("model"),
                "class": labels.get("kind"),
                "custom_details": {**labels, **notice["annotations"]},
            }
            if notice.get("generatorURL"):
                body["links"] = [{"href": notice["generatorURL"], "text": "canary finding"}]
        return json.dumps(body).encode(), {}
