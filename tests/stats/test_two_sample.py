"""Tests for canary.stats.two_sample: the e-value's formula, Ville's bound, exact power, MDE, CS and e-BH.

Simulations are seeded; every assertion on a simulated rate states its Monte Carlo standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special

from canary.stats import (
    e_benjamini_hochberg,
    planning_rate,
    rate_difference_cs,
    rate_evidence,
    rate_mde,
    rate_power,
    rate_sample_size,
)
from canary.stats.two_sample import _log_e, _log_null_sup, effect_grid


def se(rate: float, n: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 1e-12) / n)


def loglik(x: float, n: int, p: float) -> float:
    return float(special.xlogy(x, p) + special.xlog1py(n - x, -p))


def closed_form_e(fc: int, nc: int, fb: int, nb: int, margin: float, effect: float) -> float:
    """The module docstring's formula, term by term: mixture numerator over the null's supremum."""
    grid = [math.sin((j + 0.5) * math.pi / 512) ** 2 for j in range(256)]
    effects = [effect] + [effect / k for k in (4, 2) if effect / k > margin]
    effects += [effect * 2**k for k in range(1, 8) if effect * 2**k < 1]
    weights = [1.0] if len(effects) == 1 else [0.5] + [0.5 / (len(effects) - 1)] * (len(effects) - 1)
    numerator = 0.0
    for d, w in zip(effects, weights, strict=True):
        points = [t for t in grid if t + d < 1]
        for t in points:
            c = t + d
            numerator += w / len(points) * c**fc * (1 - c) ** (nc - fc) * t**fb * (1 - t) ** (nb - fb)
    if fc / nc <= fb / nb + margin:
        log_den = loglik(fc, nc, fc / nc) + loglik(fb, nb, fb / nb)
    else:
        best = optimize.minimize_scalar(
            lambda p: -(loglik(fc, nc, p + margin) + loglik(fb, nb, p)),
            bounds=(0.0, 1.0 - margin),
            method="bounded",
            options={"xatol": 1e-12},
        )
        log_den = max(-best.fun, loglik(fc, nc, margin) + loglik(fb, nb, 0.0))
    return numerator / math.exp(log_den)


@pytest.mark.parametrize(
    ("fc", "nc", "fb", "nb", "margin"),
    [(3, 10, 0, 10, 0.0), (7, 10, 1, 10, 0.0), (5, 8, 2, 12, 0.0), (10, 10, 0, 5, 0.0), (6, 10, 1, 10, 0.1)],
)
def test_the_e_value_equals_its_closed_form_on_small_tables(
    fc: int, nc: int, fb: int, nb: int, margin: float
) -> None:
    got = rate_evidence(fc, nc, fb, nb, margin=margin, effect=0.2).e_value
    assert got == pytest.approx(closed_form_e(fc, nc, fb, nb, margin, 0.2), rel=1e-6)


def test_the_effect_grid_centres_on_the_stated_effect_and_skips_tolerated_ones() -> None:
    assert effect_grid(0.1) == pytest.approx((0.1, 0.025, 0.05, 0.2, 0.4, 0.8))
    assert effect_grid(0.1, margin=0.03) == pytest.approx((0.1, 0.05, 0.2, 0.4, 0.8))
    with pytest.raises(ValueError, match="margin < effect"):
        effect_grid(0.05, margin=0.05)


def test_without_evidence_against_the_null_the_e_value_is_at_most_one() -> None:
    assert rate_evidence(0, 0, 0, 50).e_value == 1.0  # an empty side: no evidence at all
    for fc, fb in [(0, 0), (5, 5), (3, 9), (20, 20)]:
        assert rate_evidence(fc, 100, fb, 100).e_value <= 1.0
    assert rate_evidence(13, 100, 10, 100, margin=0.05).e_value <= 1.0  # within the tolerated margin


def test_the_e_value_rises_with_the_canary_failures_so_bisection_finds_the_region() -> None:
    for nc, nb, margin in [(12, 9, 0.0), (20, 20, 0.0), (7, 30, 0.0), (15, 15, 0.05)]:
        xc = np.arange(nc + 1, dtype=np.float64)
        for fb in range(nb + 1):
            log_e = _log_e(xc, nc, np.full_like(xc, fb), nb, margin, 0.1)
            above = xc / nc > fb / nb + margin  # below it E <= 1 (the MLE is a null point)
            assert np.all(np.diff(log_e[above]) >= -1e-9), (nc, nb, fb)
            assert np.all(log_e[~above] <= 1e-12)


def test_the_null_supremum_on_the_margin_matches_a_numerical_optimum() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        nc, nb = int(rng.integers(5, 300)), int(rng.integers(5, 300))
        margin = float(rng.uniform(0.01, 0.3))
        fc, fb = int(rng.integers(0, nc + 1)), int(rng.integers(0, nb + 1))
        got = float(_log_null_sup(np.array([float(fc)]), nc, np.array([float(fb)]), nb, margin)[0])
        if fc / nc <= fb / nb + margin:
            want = loglik(fc, nc, fc / nc) + loglik(fb, nb, fb / nb)
        else:
            res = optimize.minimize_scalar(
                lambda p, fc=fc, nc=nc, fb=fb, nb=nb, margin=margin: (
                    -(loglik(fc, nc, p + margin) + loglik(fb, nb, p))
                ),
                bounds=(0.0, 1.0 - margin),
                method="bounded",
                options={"xatol": 1e-12},
            )
            want = max(-res.fun, loglik(fc, nc, margin) + loglik(fb, nb, 0.0))
        assert got == pytest.approx(want, abs=1e-7), (fc, nc, fb, nb, margin)


@pytest.mark.parametrize(
    ("pc", "pb", "margin"),
    [(0.02, 0.02, 0.0), (0.2, 0.2, 0.0), (0.5, 0.5, 0.0), (0.1, 0.15, 0.0), (0.13, 0.1, 0.03)],
    ids=["2%", "20%", "50%", "canary-better", "on-the-margin"],
)
def test_ville_bounds_the_chance_that_the_e_value_ever_crosses_1_over_alpha(
    pc: float, pb: float, margin: float
) -> None:
    """400 runs a side, looked at after every 10; the crossing chance stays within 1/threshold."""
    rng = np.random.default_rng(11)
    reps, step, looks = 1500, 10, 40
    fc = np.cumsum(rng.binomial(step, pc, (looks, reps)), axis=0).astype(np.float64)
    fb = np.cumsum(rng.binomial(step, pb, (looks, reps)), axis=0).astype(np.float64)
    top = np.max(
        [_log_e(fc[i], step * (i + 1), fb[i], step * (i + 1), margin, 0.05) for i in range(looks)], axis=0
    )
    for threshold in (2.0, 20.0):
        crossed = float(np.mean(top >= math.log(threshold)))
        bound = 1.0 / threshold
        assert crossed <= bound + 3 * se(crossed, reps), f"{crossed:.4f} ± {se(crossed, reps):.4f} > {bound}"


@pytest.mark.parametrize(
    ("nc", "nb", "pc", "pb", "threshold"),
    [(284, 284, 0.12, 0.02, 100.0), (150, 300, 0.07, 0.0, 40.0), (500, 500, 0.28, 0.2, 20.0)],
)
def test_the_exact_power_matches_a_simulation(
    nc: int, nb: int, pc: float, pb: float, threshold: float
) -> None:
    rng = np.random.default_rng(5)
    reps = 6000
    xc, xb = rng.binomial(nc, pc, reps).astype(np.float64), rng.binomial(nb, pb, reps).astype(np.float64)
    simulated = float(np.mean(_log_e(xc, nc, xb, nb, 0.0, 0.1) >= math.log(threshold)))
    exact = rate_power(nc, nb, pc, pb, threshold)
    assert abs(simulated - exact) <= 3 * se(exact, reps), f"{simulated:.4f} vs exact {exact:.4f}"


def test_the_mde_is_detected_with_the_stated_power_at_the_last_look_and_more_with_looks() -> None:
    """Simulate at the MDE: the last look alone has the stated power; 20 earlier looks add to it."""
    nc, nb, pb, threshold, power = 200, 400, 0.02, 40.0, 0.8
    mde = rate_mde(nc, nb, pb, threshold, power)
    assert 0.05 < mde < 0.15
    rng = np.random.default_rng(8)
    reps, looks = 4000, 20
    fc = np.cumsum(rng.binomial(nc // looks, pb + mde, (looks, reps)), axis=0).astype(np.float64)
    fb = np.cumsum(rng.binomial(nb // looks, pb, (looks, reps)), axis=0).astype(np.float64)
    log_e = np.array(
        [_log_e(fc[i], nc // looks * (i + 1), fb[i], nb // looks * (i + 1), 0.0, 0.1) for i in range(looks)]
    )
    last = float(np.mean(log_e[-1] >= math.log(threshold)))
    ever = float(np.mean(log_e.max(axis=0) >= math.log(threshold)))
    assert abs(last - power) <= 3 * se(power, reps) + 0.002, f"last look {last:.4f} ± {se(power, reps):.4f}"
    assert ever >= power - 3 * se(power, reps), f"any look {ever:.4f} ± {se(power, reps):.4f}"
    assert rate_power(nc, nb, pb + mde, pb, threshold) >= power  # the bisection stops on the safe side


def test_the_mde_is_infinite_when_no_canary_could_reach_the_threshold() -> None:
    assert rate_mde(3, 3, 0.0, 1000.0, 0.8) == math.inf


def test_the_sample_size_reaches_the_power_it_was_asked_for() -> None:
    n = rate_sample_size(0.02, 0.1, 100.0, 0.8)
    assert rate_power(n, n, 0.12, 0.02, 100.0) >= 0.8
    assert 200 < n < 400
    assert rate_sample_size(0.02, 0.1, 100.0, 0.8, ratio=2.0) < n  # a larger baseline helps


def test_the_planning_rate_is_the_hardest_plausible_baseline_rate() -> None:
    assert planning_rate(0, 30, 0.1, 0.8) == pytest.approx(0.0231, abs=1e-4)  # Wilson, one-sided 80 %
    assert planning_rate(0, 0, 0.1, 0.8) == pytest.approx(0.45)  # nothing known: the worst rate
    assert planning_rate(455, 1000, 0.1, 0.8) == pytest.approx(0.45)  # (1 - effect)/2 is plausible
    lo = planning_rate(900, 1000, 0.1, 0.8)
    assert 0.88 < lo < 0.9  # above (1 - effect)/2: the lower bound is the harder end


def test_the_difference_confidence_sequence_covers_at_every_look() -> None:
    rng = np.random.default_rng(21)
    reps, looks, step, pc, pb, alpha = 600, 20, 15, 0.08, 0.05, 0.1
    fc = np.cumsum(rng.binomial(step, pc, (looks, reps)), axis=0)
    fb = np.cumsum(rng.binomial(step, pb, (looks, reps)), axis=0)
    missed = 0
    for r in range(reps):
        for i in range(looks):
            lo, hi = rate_difference_cs(int(fc[i, r]), step * (i + 1), int(fb[i, r]), step * (i + 1), alpha)
            if not lo <= pc - pb <= hi:
                missed += 1
                break
    rate = missed / reps
    assert rate <= alpha + 3 * se(rate, reps), f"missed {rate:.4f} ± {se(rate, reps):.4f}"
    lo, hi = rate_difference_cs(0, 0, 0, 10)  # nothing known of the canary: only the baseline bounds it
    assert hi == 1.0 and -0.5 < lo < -0.3


def test_e_bh_rejects_the_k_largest_with_e_k_at_least_m_over_alpha_k() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        e = rng.exponential(30.0, int(rng.integers(1, 8)))
        m = e.size
        ranked = np.sort(e)[::-1]
        k = max([j for j in range(1, m + 1) if ranked[j - 1] >= m / (0.05 * j)], default=0)
        want = e >= ranked[k - 1] if k else np.zeros(m, dtype=bool)
        assert np.array_equal(e_benjamini_hochberg(e, 0.05), want)
    assert e_benjamini_hochberg([20.0], 0.05).tolist() == [True]
    assert e_benjamini_hochberg([19.9], 0.05).tolist() == [False]
    assert e_benjamini_hochberg([], 0.05).size == 0
    with pytest.raises(ValueError):
        e_benjamini_hochberg([-1.0])
