"""API contract over the real ASGI transport and PostgreSQL: auth, bad bodies, deploys, gates, metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import evaluate_alerts
from canary.config.sections import AlertsSpec, VerdictPolicy
from canary.probing.runner import run_pass
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.storage.tables import AlertDeliveryRow, FindingRow
from canary.verdicts.deploys import evaluate_running
from tests.alerting.kit import NOW, make_finding
from tests.seeding import add_cells
from tests.service.conftest import MakeConfig

pytestmark = pytest.mark.anyio

TOKEN = "t0ken-for-tests"
CELLS = ["m/p/canary", "m/p/base1", "m/p/base2"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client_for(ctx: ApiContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://canary")


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(min_samples=5), token=TOKEN)
    async with client_for(ctx) as c:
        yield c


def deploy_body(**overrides: object) -> dict[str, object]:
    return {"name": "v2", "canary_cells": ["m/p/canary"], "baseline_cells": ["m/p/base*"], **overrides}


async def test_health_readiness_and_openapi_answer(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] is True
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/deploys", "/api/deploys/{deploy}", "/metrics", "/api/flagger/promote"} <= spec[
        "paths"
    ].keys()


async def test_readiness_fails_while_the_scheduler_is_not_running(engine: AsyncEngine) -> None:
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(), ready=lambda: False)
    async with client_for(ctx) as c:
        response = await c.get("/readyz")
    assert response.status_code == 503 and response.json()["scheduler"] is False


async def test_readiness_says_degraded_while_results_wait_for_the_database(engine: AsyncEngine) -> None:
    waiting = {"runs": 42, "spooled_bytes": 0, "oldest_s": 3.0, "dropped_runs": 0}
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(), backlog=lambda: waiting)
    async with client_for(ctx) as c:
        response = await c.get("/readyz")
    assert response.status_code == 200  # it answers and is writing them
    assert response.json()["status"] == "degraded" and response.json()["backlog"] == waiting


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE canary_scheduler_lag_seconds histogram" in response.text
    assert "canary_open_alerts 0.0" in response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_writes_without_the_right_bearer_token_are_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/api/deploys", json=deploy_body(), headers=headers)
    assert response.status_code == 401
    assert (await client.get("/api/deploys")).json() == []


async def test_writes_are_refused_when_no_token_is_configured(engine: AsyncEngine) -> None:
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(), token=None)
    async with client_for(ctx) as c:
        response = await c.post("/api/deploys", json=deploy_body(), headers=AUTH)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"name": "v2"},
        deploy_body(canary_cells=[]),
        deploy_body(canary_cells=["m/p/nope"]),
        deploy_body(baseline_cells=["m/p/*"]),  # overlaps the canary
        deploy_body(duration_s=-5),
        deploy_body(started_at="2026-01-01T00:00:00"),  # no time zone
        deploy_body(colour="blue"),
        deploy_body(name=""),
    ],
    ids=[
        "missing-cells",
        "empty-canary",
        "unknown-cell",
        "overlap",
        "negative",
        "naive-time",
        "extra",
        "no-name",
    ],
)
async def test_bad_deploy_bodies_are_rejected_with_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/api/deploys", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert all({"loc", "msg", "type"} <= set(error) for error in response.json()["detail"])
    assert (await client.get("/api/deploys")).json() == []


async def test_a_registered_deploy_is_pending_then_found_by_id_and_by_name(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/deploys", json=deploy_body(duration_s=60), headers=AUTH)
    assert created.status_code == 201
    deploy = created.json()
    assert deploy["baseline_cells"] == ["m/p/base1", "m/p/base2"]
    assert deploy["verdict"] == "PENDING" and deploy["exit_code"] is None
    by_id = (await client.get(f"/api/deploys/{deploy['id']}")).json()
    by_name = (await client.get("/api/deploys/v2")).json()
    assert by_id["id"] == by_name["id"] == deploy["id"]
    assert (await client.get("/api/deploys/nope")).status_code == 404


async def test_flagger_gates_answer_2xx_only_on_the_matching_verdict(
    engine: AsyncEngine, client: httpx.AsyncClient, make_config: MakeConfig
) -> None:
    config, catalog = make_config({"canary": "ok", "base1": "ok", "base2": "ok"}, repeat=1)
    started = datetime.now(UTC) - timedelta(seconds=1)
    body = deploy_body(started_at=started.isoformat(), duration_s=3600)
    deploy = (await client.post("/api/deploys", json=body, headers=AUTH)).json()
    flagger = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "metadata": {"deploy": "v2"}}
    assert (await client.post("/api/flagger/promote", json=flagger)).status_code == 412

    for _ in range(5):  # one observation per probe and pass: repeats within a pass are one cluster
        await run_pass(engine, config.targets, catalog.probes)
    # Few runs a side: PASS once the test could have seen a 90-point rise (the default needs more).
    policy = VerdictPolicy(min_samples=5, detect_effect=0.9)
    await evaluate_running(engine, policy, started + timedelta(hours=2))
    view = (await client.get(f"/api/deploys/{deploy['id']}")).json()
    assert view["verdict"] == "PASS" and view["exit_code"] == 0
    assert {m["metric"] for m in view["metrics"]} >= {"unexpected_script", "request_errors"}
    assert (await client.post("/api/flagger/promote", json=flagger)).status_code == 200
    assert (await client.post("/api/flagger/rollback", json=flagger)).status_code == 412
    missing = {**flagger, "metadata": {"deploy": "nope"}}
    assert (await client.post("/api/flagger/promote", json=missing)).status_code == 404


async def test_results_report_pass_rates_per_cell_and_metric(
    engine: AsyncEngine, client: httpx.AsyncClient, make_config: MakeConfig
) -> None:
    config, catalog = make_config({"canary": "corrupt", "base1": "ok"}, repeat=4)
    await run_pass(engine, config.targets, catalog.probes)
    rows = (await client.get("/api/results", params={"metric": "unexpected_script"})).json()
    by_cell = {r["cell"]: r for r in rows}
    assert by_cell["m/p/canary"]["pass_rate"] == 0.0 and by_cell["m/p/canary"]["n"] == 4
    assert by_cell["m/p/base1"]["pass_rate"] == 1.0
    runs = (await client.get("/api/runs", params={"cell": "m/p/base1", "limit": 2})).json()
    assert len(runs) == 2 and runs[0]["status"] == "ok"
    assert (await client.get("/api/findings")).json() == []
    assert (await client.get("/api/runs", params={"limit": 0})).status_code == 422


async def test_an_alert_links_to_its_finding_and_both_are_served(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    async with engine.begin() as conn:
        tid = (await add_cells(conn, ["m/p/canary"]))["m/p/canary"]
        finding = make_finding(tid, "m/p/canary")
        row = {k: v for k, v in dataclasses.asdict(finding).items() if k != "id"}
        finding_id = (await conn.execute(sa.insert(FindingRow).returning(FindingRow.id), row)).scalar_one()
    receiver = {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    spec = AlertsSpec.model_validate(
        {"for_s": 0, "external_url": "http://canary.test/", "receivers": [receiver]}
    )
    await evaluate_alerts(engine, [dataclasses.replace(finding, id=finding_id)], spec, NOW)

    open_alerts = (await client.get("/api/alerts")).json()
    assert [(a["state"], a["finding_id"]) for a in open_alerts] == [("firing", finding_id)]
    assert (await client.get("/api/alerts", params={"state": "resolved"})).json() == []
    alert = (await client.get(f"/api/alerts/{open_alerts[0]['fingerprint']}")).json()
    deliveries = [(d["receiver"], d["event"], d["status"]) for d in alert["deliveries"]]
    assert deliveries == [("ops", "firing", "pending")]
    link = str((await outbox_payloads(engine))[0]["generatorURL"])
    assert link == f"http://canary.test/api/findings/{finding_id}"
    served = (await client.get(link.removeprefix("http://canary.test"))).json()
    assert served["id"] == finding_id and served["sample_output"] == finding.sample_output
    assert served["observed_rate"] == finding.observed_rate and served["cell"] == "m/p/canary"
    assert (await client.get("/api/findings/999999")).status_code == 404
    assert (await client.get("/api/alerts/0000000000000000")).status_code == 404
    assert (await client.get("/api/alerts", params={"state": "bogus"})).status_code == 422


async def outbox_payloads(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(AlertDeliveryRow.payload))).scalars())
