"""Tests for canary.stats: known values (Wilson, Newcombe, scipy) and seeded simulations."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from canary.stats import (
    minimum_detectable_effect,
    rate_ci,
    rate_difference_ci,
    session_clustering,
)

# --- rates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "n", "low", "high"),
    # Newcombe (1998a), Table II, method 3 (Wilson score without continuity correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_reproduces_newcombes_textbook_examples(
    f: int, n: int, low: float, high: float
) -> None:
    assert rate_ci(f, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(("f", "n"), [(0, 10), (3, 1000), (50, 100), (999, 1000)])
def test_wilson_interval_agrees_with_scipy(f: int, n: int) -> None:
    ci = stats.binomtest(f, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert rate_ci(f, n, 0.9) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize(
    ("f1", "n1", "f0", "n0", "low", "high"),
    # Newcombe (1998b), Table II, method 10 (hybrid score).
    [(56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090), (5, 56, 0, 29, -0.0381, 0.1926)],
)
def test_newcombe_difference_interval_reproduces_the_textbook_examples(
    f1: int, n1: int, f0: int, n0: int, low: float, high: float
) -> None:
    assert rate_difference_ci(f1, n1, f0, n0) == pytest.approx((low, high), abs=5e-5)


def test_minimum_detectable_effect_is_detected_with_the_requested_power() -> None:
    p0, n, alpha, power = 0.01, 500, 0.01, 0.8
    mde = minimum_detectable_effect(p0, n, alpha, power)
    ks = np.arange(n + 1)
    k = int(ks[stats.binom.sf(ks - 1, n, p0) <= alpha][0])  # brute-force critical count
    assert stats.binom.sf(k - 1, n, p0 + mde) == pytest.approx(power, abs=1e-9)
    assert stats.binom.sf(k - 2, n, p0) > alpha


def test_minimum_detectable_effect_is_infinite_when_no_result_could_be_significant() -> None:
    assert minimum_detectable_effect(0.5, 3, alpha=0.01) == math.inf


# --- continuous values -------------------------------------------------------------------------


# --- change point and sessions -----------------------------------------------------------------


def test_sticky_sessions_show_as_clustered_failures() -> None:
    rng = np.random.default_rng(12)
    sessions: dict[str, tuple[int, int]] = {}
    for i in range(100):
        rate = 0.4 if i < 10 else 0.02  # one session in ten stuck on the bad pool
        sessions[f"s{i}"] = (int(rng.binomial(20, rate)), 20)
    r = session_clustering(sessions, np.random.default_rng(13), permutations=999)
    assert r.p_value <= 0.002
    assert r.icc > 0.1


def test_session_clustering_keeps_its_level_when_failures_are_not_clustered() -> None:
    rng = np.random.default_rng(14)
    p_values = []
    for _ in range(200):
        sizes = rng.integers(3, 30, size=40)
        sessions = {f"s{i}": (int(rng.binomial(n, 0.05)), int(n)) for i, n in enumerate(sizes)}
        p_values.append(session_clustering(sessions, rng, permutations=199).p_value)
    assert np.mean(np.array(p_values) <= 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)


def test_session_clustering_without_failures_reports_nothing_to_test() -> None:
    r = session_clustering({"a": (0, 5), "b": (0, 7)}, np.random.default_rng(0))
    assert r.p_value == 1.0 and math.isnan(r.icc)


# --- purity ------------------------------------------------------------------------------------


def test_stats_package_imports_only_numpy_scipy_and_the_standard_library() -> None:
    forbidden = {"sqlalchemy", "httpx", "anyio"}
    for path in Path(__file__).resolve().parents[2].joinpath("canary", "stats").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not {name.split(".")[0] for name in names} & forbidden, path
