"""Slack incoming webhook: one message per notice, the finding's one-line summary as its text.

Slack answers 200 ``ok``; a revoked or mistyped hook gives 403/404 (permanent) and throttling 429.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from canary.alerting.receivers.base import Receiver


class SlackReceiver(Receiver):
    kind = "slack"

    def render(self, notice: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        firing = notice["status"] == "firing"
        head = ":rotating_light: *FIRING*" if firing else ":white_check_mark: *RESOLVED*"
        summary = notice["annotations"].get("summary", "")
        link = notice.get("generatorURL")
        text = f"{head} {summary}" + (f" <{link}|details>" if link else "")
        body = {"text": text, "unfurl_links": False}
        return json.dumps(body).encode(), {}
