"""A seeded canary database for dashboard tests, and Grafana's PostgreSQL macros expanded.

The seeded state, relative to ``now``: 13 cells probed every 5 minutes for 30 hours, then
- ``canary-small/cloud-b/short-context`` turns sick: Thai characters in 10 answers in 10 minutes;
- ``canary-large/cloud-b/long-context`` has a firing alert (sick whatever its rates);
- ``canary-small/first-party/long-context`` has a pending alert (warn);
- ``canary-large/cloud-b/front-door`` stopped reporting an hour ago (no data);
- one code syntax error and one misrouted front-door request, too few to change a status;
- deploys: one PASS, one FAIL on unexpected_script, one running, one plain annotation.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage.rollups import refresh_rollups
from canary.storage.tables import AlertRow, DeployRow, FindingRow, ProbeRow, RunRow, ScoreRow, TargetRow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "dashboards" / "grafana"
MODELS = ("canary-small", "canary-large")
PLATFORMS = ("first-party", "cloud-b")
POOLS = ("short-context", "long-context", "front-door")
EXTRA_CELL = "canary-small/cloud-a/short-context"
SICK = "canary-small/cloud-b/short-context"
FIRING = "canary-large/cloud-b/long-context"
PENDING = "canary-small/first-party/long-context"
STALE = "canary-large/cloud-b/front-door"
SYNTAX = "canary-large/first-party/short-context"
MISROUTED = "canary-small/first-party/front-door"
THAI = "สวัสดี"
THAI_ANSWER = f"The capital of France is Paris {THAI} and that is all."
METRICS = ("answered", "unexpected_script", "code_syntax")
EXPECTED_STATUS = {SICK: "sick", FIRING: "sick", PENDING: "warn", STALE: "nodata"}


def all_cells() -> list[str]:
    return [f"{m}/{p}/{pool}" for m in MODELS for p in PLATFORMS for pool in POOLS] + [EXTRA_CELL]


@dataclass(frozen=True)
class Seeded:
    now: datetime
    ids: dict[str, int]
    deploys: dict[str, str]  # PASS / FAIL / PENDING / annotation -> deploy id


def _target(cell: str) -> dict[str, Any]:
    model, platform, pool = cell.split("/")
    return {
        "cell": cell,
        "model": model,
        "platform": platform,
        "pool": pool,
        "provider": "openai-chat",
        "base_url": "http://127.0.0.1:9/v1",
        "model_id": model,
        "expected_pool": "short-context" if pool == "front-door" else pool,
    }


def _failed_run(tid: int, probe: int, at: datetime, text: str, pool: str) -> dict[str, Any]:
    return {
        "pass_id": sa.func.gen_random_uuid(),
        "target_id": tid,
        "probe_pk": probe,
        "started_at": at,
        "status": "ok",
        "latency_ms": 900.0,
        "served_pool": pool,
        "output_text": text,
    }


async def _insert_run(
    conn: Any, run: dict[str, Any], scores: Mapping[str, tuple[bool, dict[str, Any]]]
) -> None:
    run_id = await conn.scalar(sa.insert(RunRow).values(**run).returning(RunRow.id))
    rows = [
        {
            "run_id": run_id,
            "target_id": run["target_id"],
            "probe_pk": run["probe_pk"],
            "metric": metric,
            "passed": passed,
            "detail": detail,
            "created_at": run["started_at"],
        }
        for metric, (passed, detail) in scores.items()
    ]
    await conn.execute(sa.insert(ScoreRow), rows)


def _verdict(outcome: str, failing: str | None) -> dict[str, Any]:
    metrics = []
    for metric in METRICS:
        fail = metric == failing
        metrics.append(
            {
                "metric": metric,
                "kind": "rate",
                "outcome": "FAIL" if fail else "PASS",
                "reason": "canary worse than baseline" if fail else "no harmful difference",
                "critical": metric == "unexpected_script",
                "muted": False,
                "canary_n": 120,
                "baseline_n": 240,
                "canary_rate": 0.2 if fail else 0.0,
                "baseline_rate": 0.0,
                "effect": 0.2 if fail else 0.0,
                "ci_low": 0.12 if fail else -0.01,
                "ci_high": 0.28 if fail else 0.01,
                "p_value": 1e-9 if fail else 1.0,
                "method": "fisher",
            }
        )
    return {
        "verdict": outcome,
        "reason": f"{outcome.lower()} by the seed",
        "exit_code": 0,
        "metrics": metrics,
    }


async def seed(engine: AsyncEngine, now: datetime) -> Seeded:
    """Insert the state described in the module docstring and refresh the rollups."""
    start = now - timedelta(hours=30)
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.insert(TargetRow).returning(TargetRow.cell, TargetRow.id), [_target(c) for c in all_cells()]
        )
        ids = {cell: tid for cell, tid in result.all()}
        probe = await conn.scalar(
            sa.insert(ProbeRow)
            .values(probe_id="capital-of-france", probe_set="basic", version=1, content_hash="h1", spec={})
            .returning(ProbeRow.id)
        )
        # The healthy history, server-side: a pass every 5 minutes per cell, every metric passing.
        await conn.execute(
            sa.text(
                "INSERT INTO runs (pass_id, target_id, probe_pk, started_at, status, latency_ms,"
                " served_pool, output_text)"
                " SELECT gen_random_uuid(), t.id, :probe, g, 'ok',"
                " 100 + (t.id * 7 + extract(minute FROM g))::int % 40, t.expected_pool,"
                " 'The capital of France is Paris.'"
                " FROM targets t CROSS JOIN generate_series(:start, :now, interval '5 minutes') g"
                " WHERE NOT (t.cell = :stale AND g > :now - interval '1 hour')"
            ),
            {"probe": probe, "start": start, "now": now, "stale": STALE},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO scores (run_id, target_id, probe_pk, metric, passed, created_at)"
                " SELECT r.id, r.target_id, r.probe_pk, m, true, r.started_at"
                " FROM runs r CROSS JOIN unnest(CAST(:metrics AS text[])) m"
            ),
            {"metrics": list(METRICS)},
        )
        for minute in range(10):
            at = now - timedelta(minutes=minute, seconds=30)
            span = {
                "start": 31,
                "end": 37,
                "script": "Thai",
                "text": THAI,
                "context": f"…is Paris {THAI} and…",
            }
            detail = {"count": 6, "scripts": {"Thai": 6}, "spans": [span], "allowed": ["Latin"]}
            await _insert_run(
                conn,
                _failed_run(ids[SICK], probe, at, THAI_ANSWER, "short-context"),
                {"answered": (True, {}), "unexpected_script": (False, detail), "code_syntax": (True, {})},
            )
        syntax = {
            "language": "python",
            "blocks": 1,
            "block": 0,
            "line": 3,
            "column": 9,
            "answer_line": 4,
            "message": "invalid syntax",
            "snippet": "    if x = 1:",
            "finish_reason": "stop",
        }
        await _insert_run(
            conn,
            _failed_run(
                ids[SYNTAX],
                probe,
                now - timedelta(minutes=40),
                "```python\ndef f(x):\n    if x = 1:\n```",
                "short-context",
            ),
            {"answered": (True, {}), "unexpected_script": (True, {}), "code_syntax": (False, syntax)},
        )
        routing = {"expected_pool": "short-context", "served_pool": "long-context", "served_by": {}}
        await _insert_run(
            conn,
            _failed_run(ids[MISROUTED], probe, now - timedelta(hours=2), "Paris, probably.", "long-context"),
            {"answered": (True, {}), "routing": (False, routing)},
        )
        await conn.execute(
            sa.update(TargetRow).where(TargetRow.cell == STALE).values(last_seen=now - timedelta(hours=1))
        )
        deploys = await _seed_alerts_and_deploys(conn, ids, now)
    await refresh_rollups(engine, start - timedelta(minutes=5), until=now + timedelta(minutes=1))
    return Seeded(now, ids, deploys)


async def _seed_alerts_and_deploys(conn: Any, ids: dict[str, int], now: datetime) -> dict[str, str]:
    finding_id = await conn.scalar(
        sa.insert(FindingRow)
        .values(
            target_id=ids[FIRING],
            cell=FIRING,
            metric="known_answer",
            kind="self",
            baseline_rate=0.01,
            observed_rate=0.3,
            effect=0.29,
            effect_ci_low=0.2,
            effect_ci_high=0.38,
            n_baseline=1000,
            baseline_failures=10,
            n_observed=60,
            failures=18,
            statistic=9.1,
            threshold=6.9,
            p_value=1e-6,
            sample_output="The answer is 41.",
            message=f"{FIRING} known_answer 1% -> 30%",
            created_at=now,
        )
        .returning(FindingRow.id)
    )
    # An equivalence finding (the cell's forced log-likelihoods against its peers').
    await conn.execute(
        sa.insert(FindingRow).values(
            target_id=ids[FIRING], cell=FIRING, metric="equivalence.forced", kind="equivalence",
            baseline_rate=0.0, observed_rate=0.0, effect=0.019, effect_ci_low=0.006, effect_ci_high=0.032,
            n_baseline=0, baseline_failures=0, n_observed=426, failures=0, statistic=24.4, threshold=15.1,
            p_value=2.4e-11, message=f"{FIRING} equivalence.forced [equivalence]: 0.019 nats/token",
            details={"tolerance": 0.002}, created_at=now, updated_at=now,
        )
    )  # fmt: skip
    for cell, state, metric in ((FIRING, "firing", "known_answer"), (PENDING, "pending", "determinism")):
        await conn.execute(
            sa.insert(AlertRow).values(
                fingerprint=f"{cell}:{metric}",
                target_id=ids[cell],
                metric=metric,
                state=state,
                started_at=now - timedelta(minutes=20),
                fired_at=now if state == "firing" else None,
                last_active_at=now,
                last_evaluated_at=now,
                finding_id=finding_id if state == "firing" else None,
                summary=f"{cell}: {metric} worse than its history",
            )
        )
    # A resolved alert must not count.
    await conn.execute(
        sa.insert(AlertRow).values(
            fingerprint=f"{SYNTAX}:code_syntax",
            target_id=ids[SYNTAX],
            metric="code_syntax",
            state="resolved",
            started_at=now - timedelta(hours=5),
            resolved_at=now - timedelta(hours=4),
            last_active_at=now - timedelta(hours=4),
            last_evaluated_at=now,
            summary="old",
        )
    )
    specs = {
        "PASS": ("rollout-41", now - timedelta(hours=20), "pass", _verdict("PASS", None), [SYNTAX], [FIRING]),
        "FAIL": (
            "rollout-42",
            now - timedelta(hours=3),
            "fail",
            _verdict("FAIL", "unexpected_script"),
            [SICK],
            [EXTRA_CELL],
        ),
        "PENDING": ("rollout-43", now - timedelta(minutes=10), "running", {}, [PENDING], [SYNTAX]),
        "annotation": ("lb-config-change", now - timedelta(hours=6), "running", {}, [], []),
    }
    deploys = {}
    for key, (name, started, status, details, canary, baseline) in specs.items():
        deploy_id = f"d-{name}"
        await conn.execute(
            sa.insert(DeployRow).values(
                id=deploy_id,
                name=name,
                canary_cells=canary,
                baseline_cells=baseline,
                started_at=started,
                duration_s=1800.0 if canary else None,
                status=status,
                details=details,
            )
        )
        deploys[key] = deploy_id
    return deploys


# Grafana's macro expansion lives with the dashboards (the benchmark uses it too).
sys.path.insert(0, str(ROOT / "dashboards"))
from grafana_sql import expand, grafana_interval, load_dashboards  # noqa: E402

__all__ = ["expand", "grafana_interval", "load_dashboards"]
