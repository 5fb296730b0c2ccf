"""Deploy verdicts from real stored runs: identical fleets pass, a corrupt canary fails, few runs are
inconclusive; a running deploy ends at the first failing look and otherwise runs its window."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.sections import VerdictPolicy
from canary.probing.runner import run_pass
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.stats.stochastic_order import dominance_sample_size
from canary.storage.tables import DeployRow, RunRow
from canary.verdicts.deploys import (
    LATENCY_SETTLE_S,
    active_bursts,
    create_deploy,
    deploy_json,
    evaluate_running,
    get_deploy,
    list_deploys,
)
from tests.seeding import add_cells, add_probes
from tests.service.conftest import MakeConfig

pytestmark = pytest.mark.anyio

# 25 canary observations (passes) against 50 baseline ones rule out +40 pts (MDE ~ +37 pts at power 0.8, three
# deciding metrics: e >= 60 to fail alone).
POLICY = VerdictPolicy(min_samples=20, detect_effect=0.4)


async def judged(
    engine: AsyncEngine, make_config: MakeConfig, canary_model: str, passes: int, after_s: float = 7200
) -> tuple[str, dict[str, object]]:
    """Probe a canary and two baseline cells ``passes`` times, then evaluate the deploy as of
    ``after_s`` later. (Repeats within one pass would be one clustered observation, not several.)"""
    config, catalog = make_config({"canary": canary_model, "base1": "ok", "base2": "ok"}, repeat=1)
    start = datetime.now(UTC) - timedelta(seconds=5)
    deploy = await create_deploy(engine, "v2", ["m/p/canary"], ["m/p/base1", "m/p/base2"], start, 3600)
    for _ in range(passes):
        await run_pass(engine, config.targets, catalog.probes, deploy_id=deploy.id)
    await evaluate_running(engine, POLICY, start + timedelta(seconds=after_s))
    row = await get_deploy(engine, deploy.id)
    assert row is not None
    return row.status, row.details


async def test_identical_fleets_pass(engine: AsyncEngine, make_config: MakeConfig) -> None:
    status, details = await judged(engine, make_config, "ok", passes=25)
    assert status == "pass"
    assert details["verdict"] == "PASS" and details["exit_code"] == 0
    metric = {m["metric"]: m for m in details["metrics"]}["unexpected_script"]  # type: ignore[attr-defined]
    assert (metric["canary_n"], metric["baseline_n"]) == (25, 50)
    assert metric["mde"] <= POLICY.detect_effect and metric["e_value"] < 1


async def test_identical_fleets_short_of_the_stated_effect_are_inconclusive(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    status, details = await judged(engine, make_config, "ok", passes=25)
    assert status == "pass"
    strict = VerdictPolicy(min_samples=20)  # +10 pts needs a few hundred runs a side
    async with engine.begin() as conn:
        await conn.execute(sa.update(DeployRow).values(status="running"))
    deploy = await get_deploy(engine, "v2")
    assert deploy is not None
    await evaluate_running(engine, strict, deploy.ends_at)
    deploy = await get_deploy(engine, "v2")
    assert deploy is not None and deploy.status == "inconclusive"
    assert (
        "unexpected_script" in deploy.details["status_reason"]
        and "detect only" in deploy.details["status_reason"]
    )


async def test_an_injected_corruption_fails_the_canary(engine: AsyncEngine, make_config: MakeConfig) -> None:
    status, details = await judged(engine, make_config, "corrupt", passes=25)
    assert status == "fail"
    assert details["verdict"] == "FAIL" and "unexpected_script" in str(details["reason"])
    metric = {m["metric"]: m for m in details["metrics"]}["unexpected_script"]  # type: ignore[attr-defined]
    assert metric["canary_rate"] == 1.0 and metric["baseline_rate"] == 0.0 and metric["p_value"] < 1e-6


async def test_too_few_runs_are_inconclusive_not_pass(engine: AsyncEngine, make_config: MakeConfig) -> None:
    status, details = await judged(engine, make_config, "ok", passes=3)
    assert status == "inconclusive"
    assert details["exit_code"] == 2


async def test_a_running_deploy_fails_at_the_first_look_whose_evidence_reaches_the_threshold(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    status, details = await judged(engine, make_config, "corrupt", passes=25, after_s=60)
    assert status == "fail" and details["verdict"] == "FAIL"
    metrics = {m["metric"]: m for m in details["metrics"]}  # type: ignore[attr-defined]
    deciding = [m for m in metrics.values() if not m["muted"]]
    metric = metrics["unexpected_script"]
    assert metric["e_value"] >= metric["e_threshold"] == len(deciding) / POLICY.alpha
    deploy = await get_deploy(engine, "v2")
    assert deploy is not None and deploy.ends_at > deploy.started_at + timedelta(seconds=60)


async def test_a_running_deploy_that_would_pass_runs_its_whole_window(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    status, details = await judged(engine, make_config, "ok", passes=25, after_s=60)
    assert status == "running" and details["verdict"] == "PASS"
    deploy = await get_deploy(engine, "v2")
    assert deploy is not None
    assert deploy_json(deploy)["verdict"] == "PENDING" and deploy_json(deploy)["latest"] == "PASS"


KAYENTA = {"m/p/canary": (100.0,) * 7 + (1.0,) * 3, "m/p/base": (1.0,) * 10}
LATENCY_ALONE = VerdictPolicy(muted_metrics=("request_errors",))  # latency the lone deciding metric
LATENCY_AND_ERRORS = VerdictPolicy(muted_metrics=())  # two deciding metrics: e >= 2/alpha to fail alone


async def store_latencies(engine: AsyncEngine, values: dict[str, tuple[float, ...]], start: datetime) -> None:
    """Successful runs with these latencies, the i-th of each cell started ``i + 1`` s after ``start``."""
    async with engine.begin() as conn:
        ids = await add_cells(conn, list(values))
        [probe] = await add_probes(conn, 1)
        rows = [
            {
                "pass_id": uuid.uuid4(),
                "target_id": ids[cell],
                "probe_pk": probe,
                "status": "ok",
                "started_at": start + timedelta(seconds=1 + i),
                "latency_ms": value,
            }  # fmt: skip
            for cell, cell_values in values.items()
            for i, value in enumerate(cell_values)
        ]
        await conn.execute(sa.insert(RunRow), rows)


@pytest.mark.parametrize(
    ("copies", "policy"),
    [
        (1, LATENCY_ALONE),
        (2, LATENCY_AND_ERRORS),
        (math.ceil(dominance_sample_size(0.3, 40.0, 0.8) / 10), LATENCY_AND_ERRORS),
    ],
    ids=["10-values-a-side-at-alpha", "20-values-a-side-at-alpha/2", "the-derived-sample-size"],
)
async def test_the_kayenta_case_fails_a_deploy_from_stored_latencies(
    engine: AsyncEngine, copies: int, policy: VerdictPolicy
) -> None:
    """Kayenta's case (7 of 10 canary latencies at 100 ms, every baseline one at 1 ms, repeated
    ``copies`` times), stored as runs a second apart: the deploy FAILs on latency. At 10 values a
    side the test reaches 25.6: enough at alpha (1/alpha = 20), not at alpha/2 (40)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    await store_latencies(engine, {cell: values * copies for cell, values in KAYENTA.items()}, start)
    deploy = await create_deploy(engine, "v2", ["m/p/canary"], ["m/p/base"], start, 900)
    await evaluate_running(engine, policy, start + timedelta(seconds=600))
    row = await get_deploy(engine, deploy.id)
    assert row is not None and row.status == "fail", row.details
    metrics = {m["metric"]: m for m in row.details["metrics"]}
    latency = metrics["latency_ms"]
    assert latency["outcome"] == "FAIL" and latency["pairs"] == 10 * copies
    deciding = sum(not m["muted"] for m in metrics.values())
    assert latency["e_value"] >= latency["e_threshold"] == deciding / policy.alpha
    assert row.details["reason"] == "metrics failed: latency_ms"


async def test_latency_reads_only_runs_started_a_request_timeout_before_the_look(engine: AsyncEngine) -> None:
    """A run is stored when it ends: one started just before a look could appear later among values
    already paired, so the look leaves out the runs started within LATENCY_SETTLE_S of it."""
    start = datetime.now(UTC) - timedelta(hours=1)
    await store_latencies(engine, {"m/p/canary": (5.0,) * 90, "m/p/base": (5.0,) * 90}, start)
    deploy = await create_deploy(engine, "v2", ["m/p/canary"], ["m/p/base"], start, 900)
    look = start + timedelta(seconds=91)  # the runs started 1..90 s after the start
    await evaluate_running(engine, LATENCY_AND_ERRORS, look)
    row = await get_deploy(engine, deploy.id)
    assert row is not None
    latency = {m["metric"]: m for m in row.details["metrics"]}["latency_ms"]
    assert latency["canary_n"] == latency["pairs"] == 90 - LATENCY_SETTLE_S


async def test_bursts_cover_both_sides_of_running_deploys_inside_their_window(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    d = await create_deploy(engine, "v3", ["m/p/a"], ["m/p/b"], now - timedelta(seconds=10), 60)
    await create_deploy(engine, "later", ["m/p/c"], ["m/p/d"], now + timedelta(hours=1), 60)
    await create_deploy(engine, "over", ["m/p/e"], ["m/p/f"], now - timedelta(hours=1), 60)
    assert await active_bursts(engine, now) == {"m/p/a": d.id, "m/p/b": d.id}


async def test_annotations_without_a_baseline_are_never_judged(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(DeployRow).values(id="lb-1", name="lb change", started_at=now))
    assert await evaluate_running(engine, POLICY, now + timedelta(hours=1)) == 0
    row = await get_deploy(engine, "lb-1")
    assert row is not None and row.status == "running" and row.details == {}


DEPLOY_CELLS = ["m/p/canary", "m/p/base1", "m/p/base2", "m/p/base3"]


async def post_deploy(engine: AsyncEngine, canary: list[str], baseline: list[str]) -> httpx.Response:
    ctx = ApiContext(engine, ServiceMetrics(), DEPLOY_CELLS, POLICY, token="t0ken")
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://canary") as client:
        body = {"name": "v2", "canary_cells": canary, "baseline_cells": baseline, "duration_s": 60}
        return await client.post("/api/deploys", json=body, headers={"Authorization": "Bearer t0ken"})


async def test_a_deploy_posted_with_exclusions_registers_the_cells_they_leave(engine: AsyncEngine) -> None:
    created = await post_deploy(engine, ["m/p/canary"], ["m/p/base*,!m/p/base2"])
    assert created.status_code == 201, created.text
    assert created.json()["baseline_cells"] == ["m/p/base1", "m/p/base3"]
    # Exclusions alone start from every cell; a list means the same as comma-joined text.
    created = await post_deploy(engine, ["m/p/canary"], ["!m/p/canary", "!m/p/base3"])
    assert created.status_code == 201, created.text
    assert created.json()["baseline_cells"] == ["m/p/base1", "m/p/base2"]


@pytest.mark.parametrize(
    ("baseline", "pattern"),
    [
        (["m/p/base*", "m/p/nope*"], "m/p/nope*"),
        (["m/p/base*,!m/p/typo"], "!m/p/typo"),
        (["m/p/base1,!m/p/base*"], "m/p/base1,!m/p/base*"),
    ],
    ids=["unknown-cell", "unknown-exclusion", "selects-nothing"],
)
async def test_a_deploy_selection_that_matches_nothing_is_rejected_naming_the_pattern(
    engine: AsyncEngine, baseline: list[str], pattern: str
) -> None:
    response = await post_deploy(engine, ["m/p/canary"], baseline)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "baseline_cells"] and repr(pattern) in error["msg"]
    assert await list_deploys(engine) == []
