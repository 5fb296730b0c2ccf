"""The status page's pure half: the health rule, the reading order, and the sparkline's band."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from scipy import stats

from canary.service.health import (
    CellHealth,
    MetricCounts,
    OpenAlert,
    attention_order,
    groups,
    judge,
    metric_severity,
    windows,
)
from canary.service.sparkline import Point, band, sparkline_svg

NOW = datetime(2026, 11, 30, 3, 7, tzinfo=UTC)


def test_a_metric_needs_several_failures_and_a_large_z_to_be_sick() -> None:
    # Baseline 0 is floored at 0.5 %: with 15 scores, 2 failures warn and 3 are sick.
    assert metric_severity(15, 1, 0.0) == 0
    assert metric_severity(15, 2, 0.0) == 1
    assert metric_severity(15, 3, 0.0) == 2
    # A cell that always fails 20 % is not sick at 20 %, only well above it.
    assert metric_severity(100, 20, 0.2) == 0
    assert metric_severity(100, 45, 0.2) == 2
    assert metric_severity(0, 0, 0.0) is None


def test_the_z_score_is_the_binomial_one_sided_normal_approximation() -> None:
    # (9 - 4) / sqrt(200 * 0.02 * 0.98) = 5 / 1.9799 = 2.525
    n, k, p0 = 200, 9, 0.02
    z = (k - n * p0) / math.sqrt(n * p0 * (1 - p0))
    assert z == pytest.approx(2.525, abs=1e-3) and metric_severity(n, k, p0) == 1


def alert(cell: str, metric: str, state: str, minutes_ago: int = 20) -> OpenAlert:
    return OpenAlert(cell, metric, state, NOW - timedelta(minutes=minutes_ago), "s", "e", "api/alerts/x")


def cell(name: str, metrics: list[MetricCounts], alerts: list[OpenAlert] | None = None) -> CellHealth:
    model, platform, pool = name.split("/")
    return judge(1, name, model, platform, pool, metrics, alerts or [])


def test_open_alerts_override_the_rates_and_name_the_worst_metric() -> None:
    clean = [MetricCounts("answered", 15, 0, 288, 0)]
    assert cell("m/p/a", clean).status == "ok"
    firing = cell(
        "m/p/a",
        clean,
        [alert("m/p/a", "determinism", "pending", 5), alert("m/p/a", "known_answer", "firing")],
    )
    assert (firing.status, firing.worst_metric, firing.recent_rate) == ("sick", "known_answer", None)
    assert cell("m/p/a", clean, [alert("m/p/a", "determinism", "pending")]).status == "warn"
    assert cell("m/p/a", []).status == "nodata"


def test_the_worst_metric_is_listed_first() -> None:
    sick = cell(
        "m/p/a", [MetricCounts("answered", 15, 0, 288, 0), MetricCounts("unexpected_script", 15, 9, 288, 0)]
    )
    assert (sick.status, sick.worst_metric, sick.recent_rate) == ("sick", "unexpected_script", 0.6)
    assert [m.metric for m in sick.metrics] == ["unexpected_script", "answered"]


def test_on_call_reads_sick_cells_first_then_warnings_then_silent_ones() -> None:
    ok = [MetricCounts("answered", 15, 0, 288, 0)]
    bad = [MetricCounts("answered", 15, 9, 288, 0)]
    cells = [
        cell("m/p/silent", []),
        cell("m/p/warn", ok, [alert("m/p/warn", "answered", "pending")]),
        cell("m/p/ok", ok),
        cell("m/p/sick-b", bad),
        cell("m/p/sick-a", bad),
        cell("m/p/sick-alerting", bad, [alert("m/p/sick-alerting", "answered", "firing")]),
    ]
    order = [c.pool for c in attention_order(cells)]
    assert order == ["sick-alerting", "sick-a", "sick-b", "warn", "silent"]
    by_group = groups([*cells, cell("z/q/ok", ok), cell("a/b/ok", ok)])
    assert [(g.model, g.platform, g.worst) for g in by_group] == [
        ("m", "p", "sick"),
        ("a", "b", "ok"),
        ("z", "q", "ok"),
    ]


def test_the_windows_are_the_views() -> None:
    recent, base_lo, base_hi, spark_lo = windows(NOW)
    assert recent == datetime(2026, 11, 30, 2, 52, tzinfo=UTC)
    assert (base_lo, base_hi) == (
        datetime(2026, 11, 29, 2, tzinfo=UTC),
        datetime(2026, 11, 30, 2, tzinfo=UTC),
    )
    assert spark_lo == datetime(2026, 11, 29, 4, tzinfo=UTC)  # 24 hours, the current one last


def test_the_band_is_the_baseline_plus_minus_z_standard_errors() -> None:
    low, high = band(0.01, 100)
    assert high == pytest.approx(0.01 + 2.5 * math.sqrt(0.01 * 0.99 / 100))
    assert low == 0.0
    # With many scores it tightens to about the normal quantile of the binomial.
    low, high = band(0.1, 10_000)
    assert high == pytest.approx(stats.binom.ppf(stats.norm.cdf(2.5), 10_000, 0.1) / 10_000, abs=2e-4)


def test_hours_above_the_band_are_marked_and_empty_hours_are_left_out() -> None:
    points = [Point(60, 0)] * 20 + [Point(0, 0), Point(60, 0), Point(60, 12), Point(20, 9)]
    svg = sparkline_svg(points, 0.0, 0.45, "unexpected_script <rate>", recent_alarm=True)
    assert svg.startswith('<svg class="spark"') and svg.endswith("</svg>")
    assert svg.count('class="out"') == 2 and 'class="now out"' in svg
    line = re.search(r'<polyline points="([^"]+)"', svg)
    assert line is not None and len(line.group(1).split()) == 23  # the empty hour is skipped
    assert "&lt;rate&gt;" in svg and "<rate>" not in svg


def test_a_metric_without_data_draws_only_its_axis() -> None:
    svg = sparkline_svg([Point(0, 0)] * 24, 0.0, None, "answered")
    assert "<polygon" not in svg and "<polyline" not in svg and "<circle" not in svg
