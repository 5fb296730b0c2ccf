"""Declared checks end to end: scored and stored by a real pass, detected and judged like scorers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import load_config
from canary.config.sections import DetectionSpec, VerdictPolicy
from canary.detection.detect import detect
from canary.probing.catalog import load_catalog
from canary.probing.runner import run_pass
from canary.verdicts.deploys import collect_samples
from canary.verdicts.judgement import judge
from tests.loopback import ThreadedServer, serve_in_thread
from tests.seeding import add_cells, add_passes, add_probes
from tests.upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

# The upstream answers "Paris is the capital of France." to everything.
PROBES = """
[[probe]]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"

[[probe.assert]]
metric = "names-paris"
type = "contains"
value = ["Paris", "France"]

[[probe.assert]]
metric = "one-word"
type = "max_chars"
value = 10

[[probe.assert]]
metric = "completed"
type = "finish_reason"
value = "stop"
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve_in_thread(ScriptedUpstream().app) as server:
        yield server


async def test_a_pass_stores_each_check_under_its_metric(
    engine: AsyncEngine, tmp_path: Path, upstream: ThreadedServer
) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "checks.toml").write_text(PROBES)
    config_path = tmp_path / "canary.toml"
    config_path.write_text(
        'probes_dir = "probes"\n'
        + "".join(
            f'[[targets]]\nmodel = "m"\nplatform = "p"\npool = "{pool}"\nprovider = "{provider}"\n'
            f'base_url = "{upstream.url}{suffix}"\nmodel_id = "ok"\n'
            for pool, provider, suffix in (("chat", "openai-chat", "/v1"), ("messages", "anthropic", ""))
        )
    )
    config = load_config(config_path)
    summary = await run_pass(engine, config.targets, load_catalog(config.probes_dir).probes)
    assert summary.failed_runs == 0
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT t.pool, s.metric, s.passed, s.value, s.detail FROM scores s"
                    " JOIN targets t ON t.id = s.target_id ORDER BY t.pool, s.id"
                )
            )
        ).all()
    for pool in ("chat", "messages"):  # "stop" and Anthropic's "end_turn" both complete
        assert [(r.metric, r.passed) for r in rows if r.pool == pool] == [
            ("answered", True),
            ("names-paris", True),
            ("one-word", False),
            ("completed", True),
        ]
    one_word = next(r for r in rows if r.metric == "one-word")
    assert one_word.value == len("Paris is the capital of France.")
    assert one_word.detail == {
        "type": "max_chars",
        "value": 10.0,
        "answer": "Paris is the capital of France.",
    }


NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)


async def test_a_declared_metric_is_detected_and_fails_a_deploy_like_a_scorer(engine: AsyncEngine) -> None:
    shift_at = NOW - timedelta(minutes=40)
    rng = np.random.default_rng(18)
    async with engine.begin() as conn:
        ids = await add_cells(conn, ["m/p/a", "m/p/b"])
        probes = await add_probes(conn, 10)
        for cell, rate in (("m/p/a", lambda t: 0.3 if t >= shift_at else 0.0), ("m/p/b", 0.0)):
            start, step = NOW - timedelta(hours=10), timedelta(minutes=5)
            await add_passes(conn, ids[cell], probes, start, NOW, step, {"refund-policy": rate}, rng)
    spec = DetectionSpec(history_s=6 * 3600, baseline_s=86400, session_permutations=199)
    findings = await detect(engine, spec, NOW, rng=np.random.default_rng(1))
    assert {(f.cell, f.metric) for f in findings} == {("m/p/a", "refund-policy")}  # against itself and b
    own = next(f for f in findings if f.kind == "self")
    assert "m/p/a refund-policy [self]" in own.message

    async with engine.connect() as conn:
        samples = await collect_samples(conn, ["m/p/a"], ["m/p/b"], shift_at, NOW)
    verdict = judge(samples, VerdictPolicy(critical_metrics=("refund-policy",)))
    assert verdict.outcome == "FAIL"
    [metric] = [m for m in verdict.metrics if m.metric == "refund-policy"]
    assert metric.outcome == "FAIL" and metric.critical
