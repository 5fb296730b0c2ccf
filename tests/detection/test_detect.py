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
    Candidate,
    Counts,
    format_message,
    invariant_candidate,
    no_data_candidate,
    peer_candidate,
)
from canary.detection.detect import Finding, detect
from canary.detection.sequential import Stream, self_candidate
from canary.errors import ConfigError
from canary.storage.tables import DeployRow, FindingRow
from tests.seeding import add_cells, add_passes, add_probes

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
SPEC = DetectionSpec(history_s=6 * 3600, baseline_s=86400, peer_window_s=7200, session_permutations=199)
T = NOW.timestamp()


CLEAN = Counts(0, 200)


def stream(failed_by_pass: np.ndarray, probes: int = 10, baseline: Counts = CLEAN) -> Stream:
    """One pass every 5 minutes ending at NOW, one observation per probe; failures given per pass."""
    passes = failed_by_pass.size
    at = np.repeat(T - 300.0 * np.arange(passes)[::-1], probes)
    failures = np.zeros(passes * probes, dtype=np.int64)
    for i, k in enumerate(failed_by_pass):
        failures[i * probes : i * probes + int(k)] = 1
    stratum = np.tile(np.arange(probes), passes)
    base = dict.fromkeys(range(probes), baseline)
    batch = np.repeat(np.arange(passes), probes)
    return Stream(1, "m/p/a", "unexpected_script", at, stratum, np.ones_like(failures), failures, base, batch)


# --- pure decisions --------------------------------------------------------------------------


def test_a_healthy_stream_is_not_evidence_and_a_shifted_one_is() -> None:
    calm = np.zeros(72, dtype=int)
    calm[::30] = 1  # 3 failing observations in 720
    assert self_candidate(stream(calm), SPEC, T, tests=7) is None
    shifted = calm.copy()
    shifted[-8:] = 2  # 20 % of the observations of the last 40 minutes
    hot = self_candidate(stream(shifted), SPEC, T, tests=7)
    assert hot is not None and hot.kind == "self"
    assert hot.statistic >= hot.threshold and hot.p_value < 1e-4
    assert hot.observed.failures >= 14 and hot.observed_rate > 0.1 and hot.effect_ci[0] > 0.05
    assert T - 3000 <= hot.details["change_at"] <= T - 2100
    assert hot.mde is not None and 0 < hot.mde < 0.05


def test_a_probe_that_always_fails_is_its_own_stratum_and_fakes_nothing() -> None:
    always = np.full(72, 1)  # probe 0 fails in every pass, and always did
    s = stream(always, baseline=Counts(0, 200))
    s = Stream(s.target_id, s.cell, s.metric, s.at, s.stratum, s.runs, s.failures,
               {0: Counts(200, 200), **{k: Counts(0, 200) for k in range(1, 10)}}, s.batch)  # fmt: skip
    assert self_candidate(s, SPEC, T, tests=7) is None


def test_a_new_probe_version_waits_for_its_own_baseline() -> None:
    shifted = np.zeros(72, dtype=int)
    shifted[-8:] = 5
    young = stream(shifted, baseline=Counts(0, 0))  # every probe version is new in the look-back
    found = self_candidate(young, SPEC, T, tests=7)
    assert found is not None  # 64 passes of their own history by the time the shift starts
    tiny = stream(shifted[-10:], baseline=Counts(0, 0))
    assert self_candidate(tiny, SPEC, T, tests=7) is None  # 2 clean passes: no baseline yet


def test_an_incident_is_over_once_the_evidence_since_its_last_alarm_favours_health() -> None:
    fault = np.zeros(72, dtype=int)
    fault[20:30] = 4
    assert self_candidate(stream(fault[:30]), SPEC, T, tests=7) is not None
    assert self_candidate(stream(fault), SPEC, T, tests=7) is None  # 42 clean passes since


def test_one_run_served_by_the_wrong_pool_is_a_finding_however_few_runs() -> None:
    """Routing is an invariant: no baseline, sample size or effect floor stands in the way."""
    assert invariant_candidate(1, "m/p/front-door", "routing", Counts(0, 5), Counts(), SPEC) is None
    found = invariant_candidate(1, "m/p/front-door", "routing", Counts(1, 5), Counts(), SPEC)
    assert found is not None and found.kind == "invariant"
    message = format_message(found, change_at=None, deploy_ids=[], sample=None)
    assert message.startswith("m/p/front-door routing [invariant]: 1 of 5 runs violated it")


def test_peer_comparison_is_stratified_by_the_probes_both_sides_ran() -> None:
    # The cell ran only a hard probe (40 % failing everywhere); peers also ran an easy one.
    cell = {1: Counts(40, 100)}
    peers = {1: Counts(80, 200), 2: Counts(0, 2000)}
    assert peer_candidate(1, "m/p/a", "x", cell, peers, ["m/p/b"], SPEC, tests=7) is None
    gap = {1: Counts(40, 100), 2: Counts(300, 1000)}
    found = peer_candidate(1, "m/p/a", "x", gap, peers, ["m/p/b"], SPEC, tests=7)
    assert found is not None and found.kind == "peer" and found.details["probes"] == 2
    assert found.p_value <= found.details["level"] < 1e-4


def test_a_cell_silent_for_three_intervals_is_a_no_data_finding() -> None:
    assert no_data_candidate(1, "m/p/a", T - 800, T - 86400, 300, T, SPEC) is None
    silent = no_data_candidate(1, "m/p/a", T - 1000, T - 86400, 300, T, SPEC)
    assert silent is not None and silent.kind == "no_data" and silent.metric == "no_data"
    line = format_message(silent, change_at=None, deploy_ids=[], sample=None)
    assert line == "m/p/a [no_data]: no run for 17 min (interval 300 s)"
    never = no_data_candidate(1, "m/p/a", None, T - 3600, 300, T, SPEC)
    assert never is not None and "never probed in 60 min" in format_message(
        never, change_at=None, deploy_ids=[], sample=None
    )


def test_the_message_line_says_value_baseline_evidence_mde_and_snippet() -> None:
    shifted = np.zeros(72, dtype=int)
    shifted[-8:] = 2
    cand = self_candidate(stream(shifted), SPEC, T, tests=7)
    assert isinstance(cand, Candidate)
    line = format_message(
        cand, change_at=NOW, deploy_ids=["lb-42"], sample="Paris สวัสดี", sessions="sessions: clustered"
    )
    assert "\n" not in line
    for part in [
        "m/p/a unexpected_script [self]",
        "passes x probes) vs baseline 0% (0/2000)",
        "nats (p<=",
        "MDE: +",
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
        f"({own.failures}/{own.n_observed} passes x probes)",
        "vs baseline",
        "nats (p<=",
        "MDE: +",
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
    slow = SPEC.model_copy(update={"peer_window_s": 86400.0})  # a drift is seen over a long window
    findings = await detect(engine, slow, NOW, rng=np.random.default_rng(1))
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
