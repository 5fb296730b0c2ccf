"""Detection: pure decisions from counts, then seeded scores in a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import build_config
from canary.config.sections import DetectionSpec
from canary.detection.decisions import (
    Counts,
    change_bin,
    format_message,
    peer_candidate,
    select,
    self_candidate,
)
from canary.detection.queries import Finding, detect
from canary.errors import ConfigError
from canary.storage.tables import DeployRow, FindingRow
from tests.seeding import add_cells, add_passes, add_probes

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
SPEC = DetectionSpec(
    window_s=3600, baseline_s=86400, peer_window_s=86400, bucket_s=300, session_permutations=199
)


# --- pure decisions --------------------------------------------------------------------------


def test_a_healthy_window_is_not_evidence_and_a_shifted_one_is() -> None:
    n = np.full(300, 10)
    healthy = np.zeros(300, dtype=int)
    healthy[::100] = 1  # 3 failures in 3000 runs
    calm = self_candidate(1, "m/p/a", "x", healthy, n, SPEC)
    assert calm is not None and calm.p_value == 1.0
    shifted = healthy.copy()
    shifted[-SPEC.window_bins :] = 2  # 20 % in the last hour
    hot = self_candidate(1, "m/p/a", "x", shifted, n, SPEC)
    assert hot is not None and hot.p_value < 1e-6
    assert hot.observed == Counts(24, 120) and hot.baseline.n == 2880
    assert hot.effect_ci[0] > 0.1


def test_one_run_served_by_the_wrong_pool_is_a_finding_however_few_runs() -> None:
    """Routing is an invariant: no baseline, sample size or effect floor stands in the way."""
    n = np.zeros(300, dtype=int)
    n[-1] = 5  # a young cell: 5 runs in all, no history
    failures = np.zeros(300, dtype=int)
    assert self_candidate(1, "m/p/front-door", "routing", failures, n, SPEC) is None
    failures[-1] = 1
    found = self_candidate(1, "m/p/front-door", "routing", failures, n, SPEC)
    assert found is not None and found.kind == "invariant" and found.p_value == 0.0
    [selected] = select([found], SPEC.model_copy(update={"min_effect": 0.5}))
    message = format_message(selected, change_at=None, deploy_ids=[], sample=None)
    assert message.startswith("m/p/front-door routing [invariant]: 1 of 5 runs violated it")
    # the same counts on a metric that is not an invariant are not enough evidence
    assert self_candidate(1, "m/p/front-door", "known_answer", failures, n, SPEC) is None


def test_a_short_history_borrows_the_peers_baseline_and_too_little_data_is_skipped() -> None:
    f, n = np.zeros(20, dtype=int), np.full(20, 5)
    assert self_candidate(1, "c", "x", f, n, SPEC) is None  # 40 baseline runs < 100
    borrowed = self_candidate(1, "c", "x", f, n, SPEC, peer_baseline=Counts(3, 500))
    assert borrowed is not None and borrowed.details["baseline"] == "own + peer history"
    assert self_candidate(1, "c", "x", f[:3], n[:3], SPEC, Counts(0, 1000)) is None  # window too small


def test_peer_comparison_uses_only_probes_both_sides_ran() -> None:
    # The cell ran only a hard probe (40 % failing everywhere); peers also ran an easy one.
    cell = {1: Counts(40, 100)}
    peers = {1: Counts(80, 200), 2: Counts(0, 2000)}
    fair = peer_candidate(1, "m/p/a", "x", cell, peers, ["m/p/b"], SPEC)
    assert fair is not None and fair.p_value > 0.3 and fair.baseline == Counts(80, 200)


def test_benjamini_hochberg_across_cells_and_the_effect_floor() -> None:
    n = np.full(300, 10)
    base = np.zeros(300, dtype=int)
    base[::50] = 1
    hot = base.copy()
    hot[-SPEC.window_bins :] = 3
    cands = [self_candidate(i, f"m/p/{i}", "x", base, n, SPEC) for i in range(40)]
    cands.append(self_candidate(99, "m/p/hot", "x", hot, n, SPEC))
    chosen = select([c for c in cands if c is not None], SPEC)
    assert [s.candidate.cell for s in chosen] == ["m/p/hot"]
    assert chosen[0].cutoff == pytest.approx(SPEC.false_discovery_rate / 41)
    strict = SPEC.model_copy(update={"min_effect": 0.5})
    assert select([c for c in cands if c is not None], strict) == []


def test_change_bin_finds_where_the_rate_rose() -> None:
    rng = np.random.default_rng(7)
    n = np.full(100, 20)
    f = rng.binomial(20, np.where(np.arange(100) < 70, 0.01, 0.3))
    assert change_bin(f, n) in (69, 70, 71)
    assert change_bin([0], [1]) is None


def test_the_message_line_says_value_baseline_statistic_counts_mde_and_snippet() -> None:
    n = np.full(300, 10)
    f = np.zeros(300, dtype=int)
    f[-SPEC.window_bins :] = 2
    cand = self_candidate(1, "m/gcp/pool-b", "unexpected_script", f, n, SPEC)
    assert cand is not None
    (sel,) = select([cand], SPEC)
    line = format_message(
        sel, change_at=NOW, deploy_ids=["lb-42"], sample="Paris สวัสดี", sessions="sessions: clustered"
    )
    assert "\n" not in line
    for part in [
        "m/gcp/pool-b unexpected_script",
        "20% failing (24/120)",
        "vs baseline 0% (0/2880)",
        "ln(1/p)=",
        "BH cutoff",
        "MDE at n=120: +",
        "since 2025-08-29 12:00Z",
        "deploys: lb-42",
        'e.g. "Paris สวัสดี"',
        "sessions: clustered",
    ]:
        assert part in line, (part, line)


def test_detection_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"canary.toml: detection.window_s: "):
        build_config({"detection": {"window_s": -1}}, "canary.toml")
    with pytest.raises(ConfigError, match=r"detection.bogus: unknown key"):
        build_config({"detection": {"bogus": 1}}, "canary.toml")


# --- against a real database -----------------------------------------------------------------

pytestmark_db = pytest.mark.anyio
CELLS = ["m/p1/a", "m/p1/b", "m/p2/c"]


async def seed_fleet(
    engine: AsyncEngine, rates: dict[str, dict[str, object]], hours: float = 25
) -> dict[str, int]:
    rng = np.random.default_rng(2025)
    async with engine.begin() as conn:
        ids = await add_cells(conn, CELLS)
        probes = await add_probes(conn, 10)
        for cell in CELLS:
            await add_passes(
                conn,
                ids[cell],
                probes,
                NOW - timedelta(hours=hours),
                NOW,
                timedelta(minutes=5),
                rates[cell],
                rng,  # type: ignore[arg-type]
            )
    return ids


@pytestmark_db
async def test_an_injected_shift_is_found_on_its_cell_and_metric_only(engine: AsyncEngine) -> None:
    shift_at = NOW - timedelta(minutes=40)
    healthy = {"unexpected_script": 0.005, "code_syntax": 0.02}
    shifted = {"unexpected_script": lambda t: 0.25 if t >= shift_at else 0.005, "code_syntax": 0.02}
    ids = await seed_fleet(engine, {"m/p1/a": healthy, "m/p1/b": shifted, "m/p2/c": healthy})
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(DeployRow),
            [
                {
                    "id": "lb-change-42",
                    "name": "load balancer",
                    "canary_cells": ["m/p1/*"],
                    "started_at": shift_at - timedelta(minutes=3),
                },
                {"id": "other-platform", "name": "x", "canary_cells": ["m/p2/*"], "started_at": shift_at},
                {"id": "last-week", "name": "y", "canary_cells": [], "started_at": NOW - timedelta(days=7)},
            ],
        )
    findings = await detect(engine, SPEC, NOW, rng=np.random.default_rng(1))
    assert findings, "the shift was missed"
    assert {(f.cell, f.metric) for f in findings} == {("m/p1/b", "unexpected_script")}
    own = next(f for f in findings if f.kind == "self")
    assert own.target_id == ids["m/p1/b"] and own.id is not None
    assert own.observed_rate > 0.1 and own.baseline_rate < 0.02 and own.effect_ci_low > 0.05
    assert own.change_point_at is not None and abs(own.change_point_at - shift_at) <= timedelta(minutes=10)
    assert own.deploy_ids == ["lb-change-42"]
    assert own.sample_output is not None and "สวัสดี" in own.sample_output
    assert own.statistic >= own.threshold and own.mde is not None and own.mde > 0
    for part in [
        "m/p1/b unexpected_script [self]",
        f"({own.failures}/{own.n_observed})",
        "vs baseline",
        "ln(1/p)=",
        "MDE at n=",
        "deploys: lb-change-42",
        "สวัสดี",
    ]:
        assert part in own.message
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(FindingRow.message, FindingRow.deploy_ids))).all()
    assert (own.message, ["lb-change-42"]) in [tuple(r) for r in stored]


@pytestmark_db
async def test_a_slowly_drifted_pool_is_flagged_against_its_peers(engine: AsyncEngine) -> None:
    start = NOW - timedelta(hours=48)

    def drift(t: datetime) -> float:  # 2 % -> 8 % over two days, no step anywhere
        return 0.02 + 0.06 * (t - start) / timedelta(hours=48)

    rates = {
        "m/p1/a": {"known_answer": 0.02},
        "m/p1/b": {"known_answer": drift},
        "m/p2/c": {"known_answer": 0.02},
    }
    await seed_fleet(engine, rates, hours=48)  # type: ignore[arg-type]
    findings = await detect(engine, SPEC, NOW, rng=np.random.default_rng(1))
    assert [(f.cell, f.kind) for f in findings if f.kind == "peer"] == [("m/p1/b", "peer")]
    assert {f.cell for f in findings} == {"m/p1/b"}
    peer = next(f for f in findings if f.kind == "peer")
    assert peer.details["peers"] == ["m/p1/a", "m/p2/c"] and "vs peers (2)" in peer.message
    assert peer.baseline_rate == pytest.approx(0.02, abs=0.01) and peer.observed_rate > 0.05


@pytestmark_db
async def test_failures_that_stick_to_sessions_are_reported_as_clustered(engine: AsyncEngine) -> None:
    rng = np.random.default_rng(3)
    async with engine.begin() as conn:
        ids = await add_cells(conn, ["m/p1/a"])
        probes = await add_probes(conn, 8)
        tid, hour = ids["m/p1/a"], NOW - timedelta(hours=1)
        await add_passes(
            conn,
            tid,
            probes,
            NOW - timedelta(hours=24),
            hour,
            timedelta(minutes=5),
            {"routing": 0.002},
            rng,
            sessions=8,
        )
        await add_passes(
            conn,
            tid,
            probes,
            hour,
            NOW,
            timedelta(minutes=5),
            {"routing": 0.002},
            rng,
            sessions=8,
            session_rates={3: 0.7},
        )
    (finding,) = await detect(engine, SPEC, NOW, rng=np.random.default_rng(1))
    assert isinstance(finding, Finding) and finding.metric == "routing"
    assert finding.details["session_clustering"]["p_value"] < 0.01
    assert "sessions: clustered" in finding.message


@pytestmark_db
async def test_a_healthy_fleet_gives_no_findings(engine: AsyncEngine) -> None:
    healthy = {"unexpected_script": 0.005, "code_syntax": 0.03, "known_answer": 0.1}
    await seed_fleet(engine, dict.fromkeys(CELLS, healthy))
    assert await detect(engine, SPEC, NOW, rng=np.random.default_rng(1)) == []
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(FindingRow)) == 0
