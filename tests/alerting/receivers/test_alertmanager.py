"""The alertmanager receiver against a real Alertmanager: labels, repeats, resolution, silences, HA pair.

Alerts go the product's whole way: findings -> :func:`evaluate_alerts` -> the outbox ->
:class:`OutboxDispatcher` -> Alertmanager's API v2, which then notifies its own receiver, a
loopback recorder. Times are the real clock's because Alertmanager judges ``endsAt`` by its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import evaluate_alerts
from canary.alerting.outbox import OutboxDispatcher
from canary.alerting.receivers.alertmanager import alert_body
from canary.alerting.resend import enqueue_resends
from canary.config.loader import build_config
from canary.config.secrets import redact_configured
from canary.config.sections import AlertsSpec
from canary.errors import ConfigError
from canary.storage.tables import AlertDeliveryRow
from tests.alerting.kit import Sink, make_finding, running_sink
from tests.alerting.receivers.amkit import alerts, running_alertmanager, silence
from tests.prombin import Server, free_port, wait_until
from tests.seeding import add_cells

pytestmark = pytest.mark.anyio

CELLS = ["m/gcp/pool-a", "m/gcp/pool-b"]


def am_spec(*urls: str, resend_s: float = 60.0) -> AlertsSpec:
    receiver = {"name": "am", "kind": "alertmanager", "urls": list(urls), "resend_s": resend_s,
                "severity": "warning", "timeout_s": 2}  # fmt: skip
    return AlertsSpec.model_validate(
        {"for_s": 0, "resolve_after_s": 0, "external_url": "http://canary.test", "receivers": [receiver]}
    )


async def fire(engine: AsyncEngine, spec: AlertsSpec, cells: list[str], now: datetime) -> dict[str, int]:
    async with engine.begin() as conn:
        ids = await add_cells(conn, cells)
    await evaluate_alerts(engine, [make_finding(ids[c], c) for c in cells], spec, now)
    return ids


def dispatcher(spec: AlertsSpec) -> OutboxDispatcher:
    return OutboxDispatcher.from_spec(spec, "canary.toml", rng=random.Random(0))


async def statuses(engine: AsyncEngine) -> list[tuple[str, str, str | None]]:
    d = AlertDeliveryRow
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(d.event, d.status, d.last_error).order_by(d.id))
        return [(e, s, err) for e, s, err in rows.all()]


@pytest.fixture
def hook_and_am(tmp_path: Path) -> Iterator[tuple[Sink, Server]]:
    """A loopback recorder and an Alertmanager whose only receiver it is."""
    with running_sink() as hook, running_alertmanager(tmp_path, hook.url) as am:
        yield hook, am


def by_cell(listed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["cell"]: a for a in listed}


def recorded(sink: Sink, cell: str) -> list[str]:
    """The statuses Alertmanager's own webhook reported for ``cell``, in order."""
    return [a["status"] for m in sink.accepted for a in m["alerts"] if a["labels"]["cell"] == cell]


def test_a_notice_becomes_a_postable_alert_with_every_label_and_the_evidence_link() -> None:
    notice = {
        "status": "firing",
        "labels": {"alertname": "CanaryQualityRegression", "cell": "m/p/a", "model": "m", "platform": "p",
                   "pool": "a", "metric": "routing", "kind": "self", "empty": ""},
        "annotations": {"summary": "m/p/a routing [self]: 12% failing"},
        "startsAt": "2025-08-29T14:00:00+02:00",
        "endsAt": None,
        "generatorURL": "http://canary.test/api/findings/7",
    }  # fmt: skip
    ends = datetime(2025, 8, 29, 12, 4, tzinfo=UTC)
    body = alert_body(notice, "critical", ends)
    assert body["labels"] == {"alertname": "CanaryQualityRegression", "cell": "m/p/a", "model": "m",
                              "platform": "p", "pool": "a", "metric": "routing", "kind": "self",
                              "severity": "critical"}  # fmt: skip
    assert body["annotations"]["evidence"] == body["generatorURL"] == "http://canary.test/api/findings/7"
    assert (body["startsAt"], body["endsAt"]) == ("2025-08-29T12:00:00Z", "2025-08-29T12:04:00Z")
    ended = {**notice, "status": "resolved", "endsAt": "2025-08-29T12:01:00+00:00"}
    resolved = alert_body(ended, "critical", ends)
    assert resolved["endsAt"] == "2025-08-29T12:01:00Z"  # ended at the resolution, not the lease


async def test_an_alert_reaches_alertmanager_with_its_labels_and_resolves_there(
    engine: AsyncEngine, hook_and_am: tuple[Sink, Server]
) -> None:
    hook, am = hook_and_am
    spec = am_spec(am.url)
    now = datetime.now(UTC)
    await fire(engine, spec, CELLS[:1], now)
    assert await dispatcher(spec).dispatch_once(engine, now) == 1
    (alert,) = alerts(am)
    assert alert["labels"] == {
        "alertname": "CanaryQualityRegression", "cell": "m/gcp/pool-a", "model": "m", "platform": "gcp",
        "pool": "pool-a", "metric": "unexpected_script", "kind": "self", "severity": "warning",
    }  # fmt: skip
    summary = alert["annotations"]["summary"]
    assert summary.startswith("m/gcp/pool-a unexpected_script [self]: 16% failing")
    assert alert["annotations"]["evidence"] == alert["generatorURL"]
    assert alert["generatorURL"].startswith("http://canary.test/api/")
    assert alert["status"]["state"] == "active"
    ends = datetime.fromisoformat(alert["endsAt"])
    assert timedelta(seconds=230) < ends - now < timedelta(seconds=250)  # 4 x resend_s ahead
    wait_until(lambda: recorded(hook, "m/gcp/pool-a") == ["firing"], "Alertmanager's firing notification")

    later = datetime.now(UTC)
    changes = await evaluate_alerts(engine, [], spec, later)  # no finding: resolves (resolve_after_s 0)
    assert [c.event for c in changes] == ["resolved"]
    assert await dispatcher(spec).dispatch_once(engine, later) == 1
    wait_until(lambda: alerts(am) == [], "the alert to leave Alertmanager's active list")
    wait_until(lambda: recorded(hook, "m/gcp/pool-a") == ["firing", "resolved"], "the resolution")
    assert await statuses(engine) == [("firing", "delivered", None), ("resolved", "delivered", None)]


async def test_a_firing_alert_is_pushed_again_each_resend_period_and_only_then(
    engine: AsyncEngine, hook_and_am: tuple[Sink, Server]
) -> None:
    _, am = hook_and_am
    spec = am_spec(am.url, resend_s=60)
    now = datetime.now(UTC)
    await fire(engine, spec, CELLS[:1], now)
    assert await enqueue_resends(engine, spec, now) == 0  # the firing notice is still pending
    await dispatcher(spec).dispatch_once(engine, now)
    first_end = datetime.fromisoformat(alerts(am)[0]["endsAt"])
    assert await enqueue_resends(engine, spec, now + timedelta(seconds=30)) == 0  # not due yet
    due = now + timedelta(seconds=60)
    assert await enqueue_resends(engine, spec, due) == 1
    assert await enqueue_resends(engine, spec, due) == 0  # one pending repeat, never a pile
    assert await dispatcher(spec).dispatch_once(engine, due) == 1
    (alert,) = alerts(am)
    assert datetime.fromisoformat(alert["endsAt"]) > first_end  # the lease moved on
    assert alert["status"]["state"] == "active"
    assert [e for e, _, _ in await statuses(engine)] == ["firing", "firing"]


async def test_a_silence_in_alertmanager_keeps_the_alert_from_its_receiver(
    engine: AsyncEngine, hook_and_am: tuple[Sink, Server]
) -> None:
    hook, am = hook_and_am
    spec = am_spec(am.url)
    now = datetime.now(UTC)
    silenced, loud = CELLS
    silence_id = silence(am, {"cell": silenced}, now.isoformat(), (now + timedelta(hours=1)).isoformat())
    await fire(engine, spec, CELLS, now)
    assert await dispatcher(spec).dispatch_once(engine, now) == 2
    wait_until(lambda: recorded(hook, loud) == ["firing"], "the unsilenced alert's notification")
    listed = by_cell(alerts(am))
    assert listed[silenced]["status"] == {"state": "suppressed", "silencedBy": [silence_id],
                                          "inhibitedBy": []}  # fmt: skip
    assert listed[loud]["status"]["state"] == "active"
    # Three group intervals later the silenced alert still has not reached the recorder.
    await anyio.sleep(1.5)
    assert recorded(hook, silenced) == []


async def test_an_ha_pair_gets_every_alert_pages_once_and_a_member_down_does_not_hold_delivery(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    gossip_a, gossip_b = free_port(), free_port()
    with (
        running_sink() as hook,
        running_alertmanager(tmp_path, hook.url, "a", (gossip_a, gossip_b)) as a,
        running_alertmanager(tmp_path, hook.url, "b", (gossip_b, gossip_a)) as b,
    ):
        down = f"http://127.0.0.1:{free_port()}"
        spec = am_spec(a.url, b.url, down)
        now = datetime.now(UTC)
        await fire(engine, spec, CELLS[:1], now)
        await dispatcher(spec).dispatch_once(engine, now)
        for member in (a, b):
            assert [x["labels"]["cell"] for x in alerts(member)] == [CELLS[0]]
        wait_until(lambda: recorded(hook, CELLS[0]) != [], "the pair's notification")
        await anyio.sleep(2.5)  # past the second member's 1 s peer timeout and a group interval
        assert recorded(hook, CELLS[0]) == ["firing"]  # both members had it; the pair paged once
    ((event, status, error),) = await statuses(engine)
    assert (event, status) == ("firing", "delivered")
    assert error is not None and error.startswith("alertmanager 3/3: ConnectError")
    assert down not in error  # URLs can carry credentials; errors never quote them


async def test_when_every_member_is_down_the_delivery_is_retried(engine: AsyncEngine) -> None:
    spec = am_spec(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    now = datetime.now(UTC)
    await fire(engine, spec, CELLS[:1], now)
    await dispatcher(spec).dispatch_once(engine, now)
    ((_, status, error),) = await statuses(engine)
    assert status == "pending" and error is not None and "alertmanager 1/2" in error and "2/2" in error


def test_the_config_names_a_missing_url_and_a_resend_period_shorter_than_detection() -> None:
    receiver: dict[str, Any] = {"name": "am", "kind": "alertmanager"}
    with pytest.raises(ConfigError, match=r"alerts.receivers.0.*needs 'urls'"):
        build_config({"alerts": {"receivers": [receiver]}}, "canary.toml")
    receiver["urls"] = ["http://am-a:9093", "http://admin:pw@am-b:9093"]
    built = build_config({"alerts": {"receivers": [receiver]}}, "canary.toml")
    assert built.receivers[0].urls == ("http://am-a:9093", "http://admin:pw@am-b:9093")
    assert "admin:pw" not in redact_configured("posting to http://admin:pw@am-b:9093 failed")
    data = {"detection": {"interval_s": 300}, "alerts": {"receivers": [{**receiver, "resend_s": 60}]}}
    with pytest.raises(ConfigError, match=r"canary.toml: alerts.receivers\[0\].resend_s: 60 is shorter"):
        build_config(data, "canary.toml")
