"""Slack incoming webhook and PagerDuty Events API v2 receivers against a loopback server."""

from __future__ import annotations

import json

import httpx
import pytest

from canary.alerting.receivers import PagerDutyReceiver, SlackReceiver
from canary.config.loader import build_config
from canary.config.receivers import ReceiverSpec
from canary.errors import ConfigError
from tests.alerting.kit import running_sink

pytestmark = pytest.mark.anyio

FIRING = {
    "status": "firing",
    "fingerprint": "feedfacecafebeef",
    "labels": {"alertname": "CanaryQualityRegression", "cell": "m/gcp/b", "model": "m",
               "metric": "code_syntax", "kind": "peer"},
    "annotations": {"summary": "m/gcp/b code_syntax [peer]: 9% failing"},
    "startsAt": "2025-08-29T12:00:00+00:00",
    "endsAt": None,
    "generatorURL": "http://canary.test/findings/7",
}  # fmt: skip
RESOLVED = {**FIRING, "status": "resolved", "endsAt": "2025-08-29T13:00:00+00:00"}


async def test_slack_gets_the_one_line_summary_and_a_revoked_hook_is_permanent() -> None:
    with running_sink(script=[200, 403]) as sink:
        slack = SlackReceiver(ReceiverSpec(name="s", kind="slack", url=sink.url), sink.url)
        async with httpx.AsyncClient() as client:
            assert (await slack.send(FIRING, client)).ok
            refused = await slack.send(RESOLVED, client)
    assert refused.permanent and refused.http_status == 403
    first = json.loads(sink.requests[0][1])["text"]
    assert "FIRING" in first and "m/gcp/b code_syntax [peer]: 9% failing" in first
    assert "RESOLVED" in json.loads(sink.requests[1][1])["text"]


async def test_pagerduty_triggers_and_resolves_by_fingerprint_with_the_routing_key() -> None:
    with running_sink(script=[202, 202, 429]) as sink:
        spec = ReceiverSpec(name="pd", kind="pagerduty", url=sink.url, routing_key="x", severity="error")
        pd = PagerDutyReceiver(spec, sink.url, "R0UTING")
        async with httpx.AsyncClient() as client:
            assert (await pd.send(FIRING, client)).ok
            assert (await pd.send(RESOLVED, client)).ok
            throttled = await pd.send(FIRING, client)
    assert not throttled.ok and not throttled.permanent
    trigger, resolve = (json.loads(body) for _, body in sink.requests[:2])
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "feedfacecafebeef"
    assert trigger["routing_key"] == "R0UTING"
    payload = trigger["payload"]
    assert (
        payload["severity"] == "error"
        and payload["source"] == "m/gcp/b"
        and payload["component"] == "code_syntax"
    )
    assert payload["summary"].startswith("m/gcp/b code_syntax") and "payload" not in resolve


def test_receiver_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"alerts.receivers\[0\]: .*needs 'routing_key'"):
        build_config({"alerts": {"receivers": [{"name": "pd", "kind": "pagerduty"}]}}, "canary.toml")
    with pytest.raises(ConfigError, match=r"alerts.receivers\[0\].kind: "):
        build_config(
            {"alerts": {"receivers": [{"name": "x", "kind": "email", "url": "http://x"}]}}, "canary.toml"
        )
    with pytest.raises(ConfigError, match=r"alerts.for_s: "):
        build_config({"alerts": {"for_s": -1}}, "canary.toml")
