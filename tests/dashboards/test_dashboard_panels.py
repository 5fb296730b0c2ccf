"""Every dashboard query, with Grafana's macros and variables expanded, runs on a seeded PostgreSQL
and returns the columns its panel expects; the views say which cell is sick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dashkit import (
    EXPECTED_STATUS,
    FIRING,
    MISROUTED,
    SICK,
    STALE,
    SYNTAX,
    THAI,
    Seeded,
    expand,
    load_dashboards,
    seed,
)
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio

# (dashboard, panel title) -> the columns its query must return, in order.
EXPECTED_COLUMNS: dict[tuple[str, str], list[str]] = {
    ("overview", "Cell health (model / platform × pool)"): ["model / platform", "pool", "status"],
    ("overview", "Cells"): ["sick", "warn", "no data", "cells"],
    ("overview", "Cells needing attention"): [
        "cell",
        "status",
        "metric",
        "failures",
        "runs",
        "rate",
        "baseline",
        "open_alerts",
    ],
    ("overview", "Open alerts"): ["since", "state", "cell", "metric", "summary", "sample_output"],
    ("overview", "Recent deploys"): ["started_at", "name", "verdict", "status", "reason"],
    ("cell", "$metric failure rate"): ["time", "failure rate", "baseline low", "baseline high"],
    ("cell", "Latency"): ["time", "p50 (mean of buckets)", "p95 (worst bucket)"],
    ("cell", "Served-by pool mix"): ["time", "metric", "runs"],
    ("cell", "Request errors"): ["time", "error rate"],
    ("cell", "Failing samples"): [
        "time",
        "metric",
        "probe",
        "offending",
        "explanation",
        "context",
        "served_pool",
        "output",
    ],
    ("cell", "Open alerts on this cell"): ["since", "state", "metric", "summary"],
    ("cell", "Equivalence against peers (equivalence.forced, equivalence.greedy)"): [
        "time",
        "metric",
        "effect",
        "ci_low",
        "ci_high",
        "tolerance",
        "n",
        "p_value",
        "open",
        "message",
    ],
    ("deploys", "Verdicts in range"): ["verdict", "deploys"],
    ("deploys", "Metrics that failed deploys"): ["metric", "failed", "judged"],
    ("deploys", "Verdict history"): [
        "started_at",
        "ends_at",
        "name",
        "id",
        "verdict",
        "status",
        "failed_metrics",
        "metrics",
        "reason",
        "canary_cells",
        "baseline_cells",
    ],
    ("deploys", "Per-metric results: $deploy"): [
        "metric",
        "outcome",
        "canary_rate",
        "baseline_rate",
        "effect",
        "ci_low",
        "ci_high",
        "p_value",
        "canary_n",
        "baseline_n",
        "method",
        "critical",
        "reason",
    ],
}
# Panels whose rows only exist for another cell than the sick one.
PANEL_VARIABLES = {
    ("cell", "Open alerts on this cell"): {"cell": FIRING},
    ("cell", "Equivalence against peers (equivalence.forced, equivalence.greedy)"): {"cell": FIRING},
}


@pytest.fixture
async def seeded(engine: AsyncEngine) -> AsyncIterator[Seeded]:
    yield await seed(engine, datetime.now(UTC).replace(microsecond=0))


def variables(seeded: Seeded, cell: str = SICK, metric: str = "unexpected_script") -> dict[str, str]:
    return {"cell": cell, "metric": metric, "deploy": seeded.deploys["FAIL"]}


async def run(engine: AsyncEngine, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(sql)
        return list(result.keys()), [tuple(r) for r in result.all()]


async def panel_rows(
    engine: AsyncEngine, seeded: Seeded, board: str, title: str, hours: float = 24, **var: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    panel = next(p for p in load_dashboards()[board]["panels"] if p["title"] == title)
    interval = 60 if hours <= 24 else 3600
    sql = expand(
        panel["targets"][0]["rawSql"],
        seeded.now - timedelta(hours=hours),
        seeded.now + timedelta(minutes=1),
        interval,
        {**variables(seeded), **var},
    )
    return await run(engine, sql)


def test_every_panel_has_an_expected_shape_listed() -> None:
    titles = {(board, p["title"]) for board, d in load_dashboards().items() for p in d["panels"]}
    assert titles == set(EXPECTED_COLUMNS)


@pytest.mark.parametrize("hours", [6, 24 * 7], ids=["minute-rollups", "hour-rollups"])
async def test_every_panel_query_returns_its_columns_and_rows(
    engine: AsyncEngine, seeded: Seeded, hours: int
) -> None:
    for board, dashboard in load_dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                values = {**variables(seeded), **PANEL_VARIABLES.get((board, panel["title"]), {})}
                start = seeded.now - timedelta(hours=hours)
                sql = expand(target["rawSql"], start, seeded.now, 60, values)
                columns, rows = await run(engine, sql)
                assert columns == EXPECTED_COLUMNS[(board, panel["title"])], (board, panel["title"])
                assert rows, f"{board}: {panel['title']} returned no rows"
                if target["format"] == "time_series":
                    times = [r[0] for r in rows]
                    assert all(isinstance(t, int | float) or hasattr(t, "__float__") for t in times)
                    assert times == sorted(times), f"{panel['title']}: time series must be sorted by time"


async def test_variable_and_annotation_queries_run(engine: AsyncEngine, seeded: Seeded) -> None:
    for dashboard in load_dashboards().values():
        for variable in dashboard["templating"]["list"]:
            _, rows = await run(
                engine, expand(variable["query"], seeded.now, seeded.now, 60, variables(seeded))
            )
            assert rows, variable["name"]
        for annotation in dashboard["annotations"]["list"]:
            if "target" not in annotation:
                continue
            start = seeded.now - timedelta(days=1)
            columns, rows = await run(engine, expand(annotation["target"]["rawSql"], start, seeded.now))
            assert columns == ["time", "timeend", "text", "tags"]
            assert {r[2] for r in rows} >= {"rollout-42: FAIL", "lb-config-change: PENDING"}


async def test_the_health_matrix_shows_each_seeded_cell_state(engine: AsyncEngine, seeded: Seeded) -> None:
    _, rows = await run(engine, "SELECT cell, status, worst_metric FROM v_cell_health")
    status = {cell: s for cell, s, _ in rows}
    expected = {cell: EXPECTED_STATUS.get(cell, "ok") for cell in seeded.ids}
    assert status == expected
    worst = {cell: metric for cell, _, metric in rows}
    assert worst[SICK] == "unexpected_script"
    assert worst[FIRING] == "known_answer"
    _, counts = await panel_rows(engine, seeded, "overview", "Cells")
    assert counts == [(2, 1, 1, len(seeded.ids))]
    _, attention = await panel_rows(engine, seeded, "overview", "Cells needing attention")
    assert [r[1] for r in attention] == ["sick", "sick", "warn", "nodata"]
    assert STALE in {r[0] for r in attention}


async def test_a_single_old_failure_does_not_make_a_cell_sick(engine: AsyncEngine, seeded: Seeded) -> None:
    _, rows = await run(engine, f"SELECT status FROM v_cell_health WHERE cell = '{SYNTAX}'")
    assert rows == [("ok",)]


async def test_the_rate_panel_shows_the_jump_above_the_baseline_band(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    _, rows = await panel_rows(engine, seeded, "cell", "$metric failure rate", hours=6)
    history, recent = rows[:-12], rows[-12:]
    assert all(rate == 0 for _, rate, _, _ in history)
    _, rate, low, high = max(recent, key=lambda r: r[1])
    assert low <= high < rate == 1.0


async def test_long_ranges_read_hourly_buckets(engine: AsyncEngine, seeded: Seeded) -> None:
    _, rows = await panel_rows(engine, seeded, "cell", "$metric failure rate", hours=24 * 7)
    times = [int(r[0]) for r in rows]
    assert len(times) <= 32 and all(t % 3600 == 0 for t in times)


async def test_failing_samples_show_the_offending_characters_and_the_syntax_error(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    _, rows = await panel_rows(engine, seeded, "cell", "Failing samples")
    assert len(rows) == 10
    assert {r[3] for r in rows} == {THAI}
    assert "Thai" in rows[0][4] and THAI in rows[0][5]
    _, rows = await panel_rows(engine, seeded, "cell", "Failing samples", cell=SYNTAX)
    [(_, metric, _, offending, explanation, _, _, _)] = rows
    assert (metric, offending) == ("code_syntax", "    if x = 1:")
    assert explanation == "python syntax error at line 3, column 9: invalid syntax"
    _, rows = await panel_rows(engine, seeded, "cell", "Failing samples", cell=MISROUTED)
    assert [(r[1], r[4]) for r in rows] == [("routing", "served by long-context, expected short-context")]


async def test_the_pool_mix_counts_the_misrouted_request(engine: AsyncEngine, seeded: Seeded) -> None:
    _, rows = await panel_rows(engine, seeded, "cell", "Served-by pool mix", cell=MISROUTED)
    totals: dict[str, int] = {}
    for _, pool, n in rows:
        totals[pool] = totals.get(pool, 0) + int(n)
    assert totals["long-context"] == 1 and totals["short-context"] > 200


async def test_deploy_panels_show_the_verdict_and_the_failing_metric(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    _, history = await panel_rows(engine, seeded, "deploys", "Verdict history", hours=48)
    assert [(r[2], r[4]) for r in history] == [
        ("rollout-43", "PENDING"),
        ("rollout-42", "FAIL"),
        ("rollout-41", "PASS"),
    ]
    _, results = await panel_rows(engine, seeded, "deploys", "Per-metric results: $deploy")
    assert results[0][:2] == ("unexpected_script", "FAIL")
    assert {r[1] for r in results[1:]} == {"PASS"}
