"""Equivalence through detection and alerts: the reference fleet on loopback, real passes, PostgreSQL.

The scheduled equivalence probes (:mod:`canary.probing.equivalence_runs`) run as ordinary passes
(:func:`canary.probing.runner.run_pass`) on the ``canary-small`` cells, then one detection round
(:func:`canary.alerting.round.detection_round`) at the service's defaults: a pool with quantized
weights is an ``equivalence`` finding and a firing ``CanaryEquivalence`` for that cell only —
by the forced test on targets that support it, by greedy agreement on greedy-only targets, by
the sampled (betting) test on sampled-only targets; a healthy fleet raises none.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.round import RoundResult, detection_round
from canary.config.loader import Target, build_config
from canary.config.sections import AlertsSpec, DetectionSpec, VerdictPolicy
from canary.detection.episodes import Finding
from canary.detection.equivalence import FORCED, GREEDY, SAMPLED
from canary.fleet import default_fleet_config, fleet_targets
from canary.fleet.running import RunningFleet, run_fleet_in_thread
from canary.probing.equivalence import load_equivalence
from canary.probing.equivalence_runs import probes_for, scheduled_probes
from canary.probing.runner import run_pass
from canary.storage import logprobs
from canary.storage.tables import AlertRow, ProbeRow, RunRow
from canary.verdicts.deploys import collect_forced
from canary.verdicts.judgement import judge

pytestmark = pytest.mark.anyio

SEED = 15
PASSES = 2
GREEDY_PASSES = 4  # the quantized pool leaves the consensus on 2 of the 4 greedy prompts
SAMPLED_PASSES = 6  # 10 samples of each of 4 prompts a pass: the betting test needs ~200 steps
BROKEN = "canary-small/cloud-a/short-context"


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    with run_fleet_in_thread(default_fleet_config()) as running:
        running.fleet.rng = np.random.default_rng(SEED)
        yield running
        running.clear_faults()


def small_cells(
    fleet: RunningFleet, tests: tuple[str, ...] = ("forced", "greedy"), provider: str = "openai-completions"
) -> list[Target]:
    tables = [
        t | {"equivalence": list(tests)}
        for t in fleet_targets(fleet.config, fleet.base_url, provider=provider, front_doors=False)
        if t["model"] == "canary-small"
    ]
    return build_config({"targets": tables}, "canary.toml").targets


async def probe_and_detect(engine: AsyncEngine, targets: list[Target], passes: int = PASSES) -> RoundResult:
    probes = scheduled_probes(load_equivalence())
    for _ in range(passes):
        for target in targets:
            await run_pass(engine, [target], probes_for(target, probes))
    alerts = AlertsSpec(for_s=0)
    return await detection_round(engine, DetectionSpec(), alerts, None, datetime.now(UTC))


async def test_a_quantized_pool_is_an_equivalence_alert_for_that_cell_only(
    fleet: RunningFleet, engine: AsyncEngine
) -> None:
    fleet.set_fault(fault="quantize", platform="cloud-a", pool="short-context", intensity=1.0)
    try:
        result = await probe_and_detect(engine, small_cells(fleet))
    finally:
        fleet.clear_faults()
    found = [f for f in result.findings if f.kind == "equivalence"]
    assert {(f.cell, f.metric) for f in found} == {(BROKEN, FORCED)}, [f.message for f in found]
    message = found[0].message
    assert "forced_logprob_deviation" in message and "nats/token [CI" in message and "tokens" in message
    assert found[0].effect > found[0].details["tolerance"]
    async with engine.connect() as conn:
        alerts = (await conn.execute(sa.select(AlertRow.state, AlertRow.labels))).all()
        stored = await conn.scalar(
            sa.select(RunRow.token_logprobs)
            .join(ProbeRow, ProbeRow.id == RunRow.probe_pk)
            .where(ProbeRow.probe_set == "equivalence.forced")
            .limit(1)
        )
    assert [(state, labels["alertname"], labels["cell"]) for state, labels in alerts] == [
        ("firing", "CanaryEquivalence", BROKEN)
    ]
    # The echo's prompt log-probabilities are stored with the run (compressed), as detection reads them.
    assert stored is not None and bytes(stored)[:1] != b"[" and len(logprobs.decode(stored) or []) > 10
    # A deploy whose canary is the quantized pool FAILs the verdict's equivalence.forced metric.
    peers = [t.cell for t in small_cells(fleet) if t.cell != BROKEN]
    async with engine.connect() as conn:
        forced = await collect_forced(
            conn, [BROKEN], peers, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
        )
    verdict = judge([], VerdictPolicy(), forced)
    assert (verdict.outcome, [m.metric for m in verdict.metrics]) == ("FAIL", ["equivalence.forced"])


async def test_a_healthy_fleet_raises_no_equivalence_finding(
    fleet: RunningFleet, engine: AsyncEngine
) -> None:
    fleet.clear_faults()
    result = await probe_and_detect(engine, small_cells(fleet, ("forced", "greedy", "sampled")))
    assert [f.message for f in result.findings if f.kind == "equivalence"] == []
    assert [c for c in result.changes if c.state == "firing"] == []


async def quantized_finding(fleet: RunningFleet, engine: AsyncEngine, test: str, passes: int) -> Finding:
    """Quantized weights on one pool of targets that run only ``test``: its one finding, firing."""
    fleet.set_fault(fault="quantize", platform="cloud-a", pool="short-context", intensity=1.0)
    try:
        # A chat API without prompt log-probabilities (the forced test needs a completions API).
        result = await probe_and_detect(engine, small_cells(fleet, (test,), "openai-chat"), passes)
    finally:
        fleet.clear_faults()
    found = [f for f in result.findings if f.kind == "equivalence"]
    expected = {(BROKEN, f"equivalence.{test}")}
    assert {(f.cell, f.metric) for f in found} == expected, [f.message for f in found]
    async with engine.connect() as conn:
        alerts = (await conn.execute(sa.select(AlertRow.state, AlertRow.labels))).all()
    assert [(state, labels["alertname"], labels["cell"]) for state, labels in alerts] == [
        ("firing", "CanaryEquivalence", BROKEN)
    ]
    return found[0]


async def test_greedy_agreement_finds_a_quantized_pool_on_greedy_only_targets(
    fleet: RunningFleet, engine: AsyncEngine
) -> None:
    found = await quantized_finding(fleet, engine, "greedy", GREEDY_PASSES)
    assert found.metric == GREEDY
    assert "greedy_divergence" in found.message and "median first divergent token" in found.message


async def test_the_sampled_test_finds_a_quantized_pool_on_sampled_only_targets(
    fleet: RunningFleet, engine: AsyncEngine
) -> None:
    found = await quantized_finding(fleet, engine, "sampled", SAMPLED_PASSES)
    assert found.metric == SAMPLED and "mmd_betting" in found.message and "log-wealth" in found.message
    assert found.details["n"] > 100 and found.effect > 0
