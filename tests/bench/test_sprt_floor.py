"""The benchmark's floor: Wald's SPRT average sample number, against the design doc and the textbook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench._sprt import wald_asn
from canary.stats import kl_bernoulli


def test_corruption_from_0_1_to_5_percent_needs_about_46_probes() -> None:
    asn = wald_asn(0.001, 0.05, alpha=0.001, beta=0.01)
    assert round(asn.under_h1) == 46
    assert asn.under_h1 == pytest.approx(45.884, abs=1e-3)


def test_front_door_misroute_needs_about_163000_probes_at_a_5_percent_wrong_answer_rate() -> None:
    # The doc's 163,000 is reproduced only for a healthy wrong-answer rate p0 = 5 %.
    assert wald_asn(0.05, 0.05 + 0.008 * 0.25, 0.001, 0.01).under_h1 == pytest.approx(163_000, rel=1e-3)
    assert wald_asn(0.01, 0.01 + 0.008 * 0.25, 0.001, 0.01).under_h1 == pytest.approx(35_721, rel=1e-3)


def test_wald_asn_matches_the_textbook_formula_under_both_hypotheses() -> None:
    p0, p1, a, b = 0.02, 0.08, 0.05, 0.1
    log_a, log_b = math.log((1 - b) / a), math.log(b / (1 - a))
    z1 = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    z0 = p0 * math.log(p1 / p0) + (1 - p0) * math.log((1 - p1) / (1 - p0))
    asn = wald_asn(p0, p1, a, b)
    assert asn.under_h1 == pytest.approx(((1 - b) * log_a + b * log_b) / z1)
    assert asn.under_h0 == pytest.approx(((1 - a) * log_b + a * log_a) / z0)
    assert kl_bernoulli(p1, p0) == pytest.approx(z1)


def _simulate_sprt(
    p0: float, p1: float, alpha: float, beta: float, rate: float, seed: int
) -> tuple[float, float]:
    """Share of runs deciding H1 and mean sample number, over 20,000 runs of at most 1,000 probes."""
    rng = np.random.default_rng(seed)
    a, c = math.log(p1 / p0), math.log((1 - p0) / (1 - p1))  # LLR of a failure, of a pass
    upper, lower = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    llr = np.cumsum(np.where(rng.random((20_000, 1_000)) < rate, a, -c), axis=1)
    out = (llr >= upper) | (llr <= lower)
    assert out.any(axis=1).all()
    stop = out.argmax(axis=1)
    decided_h1 = llr[np.arange(llr.shape[0]), stop] >= upper
    return float(decided_h1.mean()), float(stop.mean() + 1)


def test_simulated_sprt_keeps_wald_error_bounds_and_its_asn_is_close_to_walds() -> None:
    p0, p1, alpha, beta = 0.01, 0.05, 0.05, 0.1
    false_alarm, asn0 = _simulate_sprt(p0, p1, alpha, beta, p0, seed=1)
    power, asn1 = _simulate_sprt(p0, p1, alpha, beta, p1, seed=2)
    # Wald's inequalities: alpha' <= alpha / (1 - beta), beta' <= beta / (1 - alpha).
    assert false_alarm <= alpha / (1 - beta)
    assert 1 - power <= beta / (1 - alpha)
    # Overshoot makes real sample numbers somewhat larger than Wald's approximation, never smaller by much.
    wald = wald_asn(p0, p1, alpha, beta)
    assert 0.9 * wald.under_h1 <= asn1 <= 1.4 * wald.under_h1
    assert 0.9 * wald.under_h0 <= asn0 <= 1.4 * wald.under_h0
