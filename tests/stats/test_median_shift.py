"""Tests for canary.stats.median_shift: the sign-test e-value's closed form, Ville's bound, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from canary.stats import log_e_median_greater, median_cs, median_ratio_cs
from canary.stats.median_shift import log_e_above_half


def se(rate: float, n: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 1e-12) / n)


@pytest.mark.parametrize(("k", "n"), [(0, 0), (0, 5), (3, 5), (5, 5), (40, 60), (90, 100)])
def test_the_one_sample_e_value_is_the_uniform_mixture_integral(k: int, n: int) -> None:
    integral, _ = integrate.quad(lambda q: 2.0 * (2 * q) ** k * (2 * (1 - q)) ** (n - k), 0.5, 1.0)
    assert float(log_e_above_half(k, n)) == pytest.approx(math.log(integral), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.2], ids=["identical", "on-the-boundary"])
def test_ville_bounds_the_chance_of_ever_claiming_a_higher_median(shift: float) -> None:
    """``a`` has exactly ``1 + shift`` times ``b``'s median (the null's edge); 300 values a side,
    looked at after every 10: the chance of ever crossing stays within 1/threshold."""
    rng = np.random.default_rng(4)
    reps, step, looks = 1000, 10, 30
    crossed = {2.0: 0, 20.0: 0}
    for _ in range(reps):
        a = rng.lognormal(5.0 + math.log1p(shift), 0.5, step * looks)
        b = (1.0 + shift) * rng.lognormal(5.0, 0.5, step * looks)
        top = max(log_e_median_greater(a[: step * i], b[: step * i]) for i in range(1, looks + 1))
        for threshold in crossed:
            crossed[threshold] += top >= math.log(threshold)
    for threshold, count in crossed.items():
        rate = count / reps
        assert rate <= 1.0 / threshold + 3 * se(rate, reps), f"{rate:.4f} ± {se(rate, reps):.4f}"


def test_only_ranks_matter_so_a_monotone_transform_changes_nothing() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(0.0, 1.0, 90)
    assert log_e_median_greater(a, b) == pytest.approx(log_e_median_greater(np.exp(a), np.exp(b)))
    assert log_e_median_greater(a, []) == 0.0


def test_a_doubled_median_is_found_within_a_few_dozen_values() -> None:
    rng = np.random.default_rng(7)
    base = rng.lognormal(5.0, 0.2, 40)
    slow = 2.0 * rng.lognormal(5.0, 0.2, 40)
    assert log_e_median_greater(slow, 1.2 * base) > math.log(20.0)
    assert log_e_median_greater(1.2 * base, slow) < 0.0


def test_the_median_confidence_sequence_covers_at_every_look() -> None:
    rng = np.random.default_rng(13)
    reps, step, looks, alpha = 400, 10, 30, 0.1
    missed = 0
    for _ in range(reps):
        x = rng.exponential(1.0, step * looks)  # median ln 2
        bounds = [median_cs(x[: step * i], alpha) for i in range(1, looks + 1)]
        missed += any(not lo <= math.log(2) <= hi for lo, hi in bounds)
    rate = missed / reps
    assert rate <= alpha + 3 * se(rate, reps), f"missed {rate:.4f} ± {se(rate, reps):.4f}"
    assert median_cs([1.0, 2.0], 0.05) == (-math.inf, math.inf)  # too few values to bound anything


def test_the_ratio_bounds_bracket_the_true_ratio() -> None:
    rng = np.random.default_rng(1)
    lo, hi = median_ratio_cs(1.5 * rng.lognormal(5, 0.3, 500), rng.lognormal(5, 0.3, 500), 0.05)
    assert lo < 0.5 < hi and hi - lo < 0.4
