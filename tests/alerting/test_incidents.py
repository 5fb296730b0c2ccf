"""Alerts end to end: state machine, outbox, a real loopback receiver that fails, hangs and recovers."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import AlertState, advance, evaluate_alerts, fingerprint
from canary.alerting.outbox import OutboxDispatcher, backoff_delay
from canary.alerting.receivers.webhook import SIGNATURE_HEADER, sign
from canary.config.sections import AlertsSpec, DeliveryPolicy
from canary.storage.engine import async_engine
from canary.storage.tables import AlertDeliveryRow, AlertRow, DeliveryAttemptRow
from tests.alerting.kit import NOW, make_finding, running_sink
from tests.seeding import add_cells, add_passes, add_probes

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-test-9f8e7d"
MINUTE = timedelta(minutes=1)


def spec_for(url: str, timeout_s: float = 0.5, **kw: object) -> AlertsSpec:
    secret = "env:CANARY_TEST_HOOK_SECRET"
    receiver = {"name": "ops", "kind": "webhook", "url": url, "secret": secret, "timeout_s": timeout_s}
    return AlertsSpec.model_validate({"for_s": 0, "resolve_after_s": 300, **kw, "receivers": [receiver]})


@pytest.fixture(autouse=True)
def hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_TEST_HOOK_SECRET", SECRET)


def make_dispatcher(spec: AlertsSpec, seed: int = 0) -> OutboxDispatcher:
    return OutboxDispatcher.from_spec(spec, "canary.toml", rng=random.Random(seed))


async def deliveries(engine: AsyncEngine) -> list[tuple[str, str, int]]:
    async with engine.connect() as conn:
        q = sa.select(AlertDeliveryRow.event, AlertDeliveryRow.status, AlertDeliveryRow.attempts)
        return [tuple(r) for r in (await conn.execute(q.order_by(AlertDeliveryRow.id))).all()]  # type: ignore[misc]


# --- pure -------------------------------------------------------------------------------------


def test_the_state_machine_goes_pending_firing_resolved_and_notifies_each_once() -> None:
    spec = AlertsSpec(for_s=120, resolve_after_s=300)
    s, e = advance(None, True, NOW, spec)
    assert s is not None and s.state == "pending" and e is None
    s, e = advance(s, True, NOW + MINUTE, spec)
    assert s is not None and s.state == "pending" and e is None
    s, e = advance(s, True, NOW + 2 * MINUTE, spec)
    assert s is not None and s.state == "firing" and e == "firing" and s.fired_at == NOW + 2 * MINUTE
    s, e = advance(s, True, NOW + 3 * MINUTE, spec)
    assert s is not None and s.state == "firing" and e is None  # updated, not repeated
    s, e = advance(s, False, NOW + 5 * MINUTE, spec)
    assert s is not None and s.state == "firing" and e is None  # one clean look is not recovery
    s, e = advance(s, False, NOW + 8 * MINUTE, spec)
    assert s is not None and s.state == "resolved" and e == "resolved"


def test_a_pending_alert_that_clears_closes_without_a_notification() -> None:
    spec = AlertsSpec(for_s=600, resolve_after_s=0)
    s, _ = advance(None, True, NOW, spec)
    s, e = advance(s, False, NOW + MINUTE, spec)
    assert s == AlertState("resolved", NOW, None, NOW) and e is None
    assert advance(None, False, NOW, spec) == (None, None)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy, rng = DeliveryPolicy(backoff_initial_s=10, backoff_max_s=100), random.Random(1)
    delays = [backoff_delay(k, policy, rng) for k in range(1, 8)]
    for k, d in enumerate(delays, start=1):
        base = min(100.0, 10.0 * 2 ** (k - 1))
        assert base / 2 <= d <= base
    assert delays != [backoff_delay(k, policy, random.Random(2)) for k in range(1, 8)]


# --- end to end -------------------------------------------------------------------------------

pytestmark_db = pytest.mark.anyio


@pytestmark_db
async def test_firing_is_notified_once_then_resolved_after_recovery(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        tid = (await add_cells(conn, ["m/p1/a"]))["m/p1/a"]
    finding = make_finding(tid, "m/p1/a")
    with running_sink() as sink:
        spec = spec_for(sink.url, for_s=60)
        dispatcher = make_dispatcher(spec)
        for minute in range(0, 6):  # the finding persists for five minutes
            await evaluate_alerts(engine, [finding], spec, NOW + minute * MINUTE)
            await dispatcher.dispatch_once(engine, NOW + minute * MINUTE)
        assert [a["status"] for a in sink.accepted] == ["firing"]
        for minute in range(6, 20):  # recovered: no findings any more
            await evaluate_alerts(engine, [], spec, NOW + minute * MINUTE)
            await dispatcher.dispatch_once(engine, NOW + minute * MINUTE)
    assert [a["status"] for a in sink.accepted] == ["firing", "resolved"]
    assert sink.accepted[0]["alerts"][0]["fingerprint"] == fingerprint("m/p1/a", "unexpected_script")
    assert sink.accepted[1]["alerts"][0]["fingerprint"] == sink.accepted[0]["alerts"][0]["fingerprint"]
    assert await deliveries(engine) == [("firing", "delivered", 1), ("resolved", "delivered", 1)]
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(AlertRow.state, AlertRow.fired_at, AlertRow.resolved_at))).all()
    assert [tuple(r) for r in rows] == [("resolved", NOW + MINUTE, NOW + 10 * MINUTE)]


@pytestmark_db
async def test_delivered_at_is_when_the_receiver_answered_not_when_the_row_was_claimed(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        tid = (await add_cells(conn, ["m/p1/a"]))["m/p1/a"]
    with running_sink(delay_s=0.6) as sink:
        spec = spec_for(sink.url, timeout_s=5)
        await evaluate_alerts(engine, [make_finding(tid, "m/p1/a")], spec, NOW)
        assert await make_dispatcher(spec).dispatch_once(engine, NOW) == 1
    async with engine.connect() as conn:
        delivered = await conn.scalar(sa.select(AlertDeliveryRow.delivered_at))
        attempt = await conn.scalar(sa.select(DeliveryAttemptRow.at))
    assert delivered is not None and timedelta(seconds=0.6) <= delivered - NOW < timedelta(seconds=5)
    assert attempt == delivered


@pytestmark_db
async def test_a_receiver_that_fails_then_hangs_then_recovers_gets_it_exactly_once(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        tid = (await add_cells(conn, ["m/gcp/pool-b"]))["m/gcp/pool-b"]
    with running_sink(script=[500, "hang"], hang_s=1.5) as sink:
        spec = spec_for(sink.url, external_url="http://canary.test")
        dispatcher = make_dispatcher(spec)
        await evaluate_alerts(engine, [make_finding(tid, "m/gcp/pool-b")], spec, NOW)
        assert await dispatcher.dispatch_once(engine, NOW) == 1  # 500
        assert await dispatcher.dispatch_once(engine, NOW + 1 * MINUTE) == 1  # hangs past the 0.5 s timeout
        assert await dispatcher.dispatch_once(engine, NOW + 30 * MINUTE) == 1  # recovered
        assert await dispatcher.dispatch_once(engine, NOW + 90 * MINUTE) == 0
    assert len(sink.requests) == 3 and len(sink.accepted) == 1
    async with engine.connect() as conn:
        q = sa.select(DeliveryAttemptRow.ok, DeliveryAttemptRow.http_status, DeliveryAttemptRow.error)
        attempts = [tuple(r) for r in (await conn.execute(q.order_by(DeliveryAttemptRow.id))).all()]
    assert attempts == [(False, 500, "HTTP 500"), (False, None, "timed out after 0.5s"), (True, 200, None)]
    assert await deliveries(engine) == [("firing", "delivered", 3)]
    headers, body = sink.requests[-1]
    header = headers[SIGNATURE_HEADER.lower()]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert header == sign(body, SECRET, timestamp)  # HMAC verifies at the receiver
    message = json.loads(body)
    assert {"version", "groupKey", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations",
            "externalURL", "alerts"} <= set(message)  # fmt: skip
    alert = message["alerts"][0]
    assert message["version"] == "4" and message["receiver"] == "ops" and alert["status"] == "firing"
    assert alert["labels"]["pool"] == "pool-b" and alert["labels"]["metric"] == "unexpected_script"
    assert alert["generatorURL"] == f"http://canary.test/api/alerts/{alert['fingerprint']}"
    assert "16% failing" in alert["annotations"]["summary"] and alert["endsAt"] == "0001-01-01T00:00:00Z"


@pytestmark_db
async def test_a_404_stops_retries_and_an_old_delivery_is_given_up(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ids = await add_cells(conn, ["m/p1/a", "m/p1/b"])
    with running_sink(script=[404]) as sink:
        spec = spec_for(sink.url, max_age_s=3600)
        dispatcher = make_dispatcher(spec)
        await evaluate_alerts(engine, [make_finding(ids["m/p1/a"], "m/p1/a")], spec, NOW)
        assert await dispatcher.dispatch_once(engine, NOW) == 1
        assert await dispatcher.dispatch_once(engine, NOW + 10 * MINUTE) == 0
        sink.script = [503]
        await evaluate_alerts(engine, [make_finding(ids["m/p1/b"], "m/p1/b")], spec, NOW)
        assert await dispatcher.dispatch_once(engine, NOW + MINUTE) == 1
        assert await dispatcher.dispatch_once(engine, NOW + timedelta(hours=2)) == 0  # too old
    assert len(sink.requests) == 2
    assert await deliveries(engine) == [("firing", "failed", 1), ("firing", "gave_up", 1)]


def child_script(db_url: str, spec: AlertsSpec, tid: int, dispatch: bool) -> str:
    action = "await OutboxDispatcher.from_spec(spec, 'x').dispatch_once(engine, NOW)"
    return f"""
import os, anyio
from canary.alerting.incidents import evaluate_alerts
from canary.alerting.outbox import OutboxDispatcher
from canary.config.sections import AlertsSpec
from canary.storage.engine import async_engine
from tests.alerting.kit import NOW, make_finding
async def main():
    engine = async_engine({db_url!r})
    spec = AlertsSpec.model_validate_json({spec.model_dump_json()!r})
    if not {dispatch!r}:
        await evaluate_alerts(engine, [make_finding({tid}, "m/p1/a")], spec, NOW)
    else:
        {action}
    os._exit(1)  # dies without dispatching (or recording), as a killed canary would
anyio.run(main)
"""


@pytestmark_db
async def test_a_process_killed_after_commit_or_mid_send_delivers_after_restart(
    engine: AsyncEngine, db_url: str
) -> None:
    async with engine.begin() as conn:
        tid = (await add_cells(conn, ["m/p1/a"]))["m/p1/a"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with running_sink(script=["hang"], hang_s=60) as sink:
        spec = spec_for(sink.url, timeout_s=30, lease_s=60)  # the child waits on the hang until killed
        committed = await anyio.run_process(
            [sys.executable, "-c", child_script(db_url, spec, tid, dispatch=False)],
            env=env,
            check=False,
            cwd=ROOT,
        )
        assert committed.returncode == 1 and sink.requests == []
        assert await deliveries(engine) == [("firing", "pending", 0)]
        child = await anyio.open_process(
            [sys.executable, "-c", child_script(db_url, spec, tid, dispatch=True)], env=env, cwd=ROOT
        )
        async with child:
            try:
                await anyio.to_thread.run_sync(sink.wait_for_requests, 1)
            finally:
                child.kill()
                await child.wait()
        assert await deliveries(engine) == [("firing", "pending", 1)]  # claimed, never recorded
        dispatcher = make_dispatcher(spec)
        assert await dispatcher.dispatch_once(engine, NOW + timedelta(seconds=30)) == 0  # still leased
        assert await dispatcher.dispatch_once(engine, NOW + 2 * MINUTE) == 1
    assert await deliveries(engine) == [("firing", "delivered", 2)]
    assert len(sink.accepted) == 1


@pytestmark_db
async def test_two_dispatchers_at_once_never_send_a_delivery_twice(engine: AsyncEngine, db_url: str) -> None:
    cells = [f"m/p{i}/a" for i in range(24)]
    async with engine.begin() as conn:
        ids = await add_cells(conn, cells)
    with running_sink(delay_s=0.02) as sink:
        spec = spec_for(sink.url, batch_size=5)
        await evaluate_alerts(engine, [make_finding(ids[c], c) for c in cells], spec, NOW)
        other = async_engine(db_url)
        counts: dict[str, int] = {"a": 0, "b": 0}

        async def drain(name: str, eng: AsyncEngine, seed: int) -> None:
            dispatcher = make_dispatcher(spec, seed)
            while n := await dispatcher.dispatch_once(eng, NOW):
                counts[name] += n

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, "a", engine, 1)
                tg.start_soon(drain, "b", other, 2)
        finally:
            await other.dispose()
    fingerprints = [a["alerts"][0]["fingerprint"] for a in sink.accepted]
    assert len(fingerprints) == len(set(fingerprints)) == 24
    assert counts["a"] + counts["b"] == 24 and counts["a"] > 0 and counts["b"] > 0
    assert {d[1:] for d in await deliveries(engine)} == {("delivered", 1)}


# --- command line -----------------------------------------------------------------------------


def test_canary_detect_once_finds_fires_notifies_and_exits_1(db_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from canary.cli import main

    now = datetime.now(UTC)

    async def seed() -> None:
        eng = async_engine(db_url)
        try:
            async with eng.begin() as conn:
                ids = await add_cells(conn, ["m/p1/a", "m/p1/b"])
                probes = await add_probes(conn, 10)
                rng = np.random.default_rng(5)
                start, step = now - timedelta(hours=12), timedelta(minutes=5)
                await add_passes(conn, ids["m/p1/a"], probes, start, now, step, {"code_syntax": 0.01}, rng)
                hot = {"code_syntax": lambda t: 0.3 if t > now - timedelta(minutes=30) else 0.01}
                await add_passes(conn, ids["m/p1/b"], probes, start, now, step, hot, rng)
        finally:
            await eng.dispose()

    anyio.run(seed)
    handlers = logging.getLogger().handlers[:]  # the CLI configures logging; give pytest its own back
    with running_sink() as sink:
        config = tmp_path / "canary.toml"
        config.write_text(
            f'[database]\nurl = "{db_url}"\n[detection]\nbaseline_s = 43200\n'
            f'[alerts]\nfor_s = 0\n[[alerts.receivers]]\nname = "ops"\nkind = "webhook"\nurl = "{sink.url}"\n'
        )
        runner = CliRunner()
        result = runner.invoke(main, ["detect", "--once", "--config", str(config)])
        assert result.exit_code == 1, result.output
        assert "FINDING m/p1/b code_syntax [self]" in result.output
        assert "ALERT FIRING m/p1/b code_syntax" in result.output
        assert [a["status"] for a in sink.accepted] == ["firing"]
        listed = runner.invoke(main, ["alerts", "list", "--config", str(config)])
        assert listed.exit_code == 1 and "firing   m/p1/b code_syntax" in listed.output
        again = runner.invoke(main, ["alerts", "dispatch", "--once", "--config", str(config)])
        assert again.exit_code == 0 and len(sink.requests) == 1
        # With for_s, the alert is pending: healthy by default, failing for a gate that asks.
        config.write_text(config.read_text().replace("for_s = 0", "for_s = 3600"))
        anyio.run(_clear_alerts, db_url)
        calm = runner.invoke(main, ["detect", "--once", "--config", str(config)])
        assert calm.exit_code == 0 and "1 pending" in calm.output, calm.output
        strict = runner.invoke(main, ["detect", "--once", "--fail-on", "pending", "--config", str(config)])
        assert strict.exit_code == 1, strict.output
    logging.getLogger().handlers[:] = handlers


async def _clear_alerts(db_url: str) -> None:
    eng = async_engine(db_url)
    try:
        async with eng.begin() as conn:
            await conn.execute(sa.delete(AlertDeliveryRow))
            await conn.execute(sa.delete(AlertRow))
    finally:
        await eng.dispose()
