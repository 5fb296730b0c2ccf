"""Tests for canary.stats: known values (Wald, Wilson, Newcombe, scipy) and seeded simulations."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from canary.stats import (
    BernoulliCUSUM,
    BernoulliSPRT,
    always_valid_p_value,
    benjamini_hochberg,
    change_point,
    compare_continuous,
    compare_rates,
    cusum_arl,
    cusum_paths,
    cusum_threshold_for_arl,
    kl_bernoulli,
    mean_wait_for_event,
    minimum_detectable_effect,
    minimum_sample_size,
    peer_test,
    rate_ci,
    rate_difference_ci,
    sample_size_sufficient,
    session_clustering,
    wald_asn,
)

# --- Wald's SPRT and the design doc's worked numbers -------------------------------------------


def test_corruption_from_0_1_to_5_percent_needs_about_46_probes() -> None:
    asn = wald_asn(0.001, 0.05, alpha=0.001, beta=0.01)
    assert round(asn.under_h1) == 46
    assert asn.under_h1 == pytest.approx(45.884, abs=1e-3)


def test_front_door_misroute_needs_about_163000_probes_at_a_5_percent_wrong_answer_rate() -> None:
    # The doc's 163,000 is reproduced only for a healthy wrong-answer rate p0 = 5 %.
    assert wald_asn(0.05, 0.05 + 0.008 * 0.25, 0.001, 0.01).under_h1 == pytest.approx(163_000, rel=1e-3)
    assert wald_asn(0.01, 0.01 + 0.008 * 0.25, 0.001, 0.01).under_h1 == pytest.approx(35_721, rel=1e-3)


def test_served_by_evidence_sees_the_first_misroute_after_125_probes() -> None:
    assert mean_wait_for_event(0.008) == pytest.approx(125.0)


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
    sprt = BernoulliSPRT(p0, p1, alpha, beta)
    llr = np.cumsum(np.where(rng.random((20_000, 1_000)) < rate, sprt.a, -sprt.c), axis=1)
    out = (llr >= sprt.upper) | (llr <= sprt.lower)
    assert out.any(axis=1).all()
    stop = out.argmax(axis=1)
    decided_h1 = llr[np.arange(llr.shape[0]), stop] >= sprt.upper
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


def test_sprt_decides_h1_on_a_burst_of_failures_and_keeps_its_decision() -> None:
    sprt = BernoulliSPRT(0.001, 0.05, alpha=0.001, beta=0.01)
    assert sprt.state.upper == pytest.approx(math.log(0.99 / 0.001))
    assert sprt.state.lower == pytest.approx(math.log(0.01 / 0.999))
    state = sprt.update_one(True)
    assert state.decision is None
    state = sprt.update_one(True)
    assert state.decision == "h1" and state.n == 2 and state.failures == 2
    assert sprt.update(0, 10_000).decision == "h1"
    assert sprt.state.n == 2


def test_sprt_accepts_h0_after_a_long_clean_run() -> None:
    sprt = BernoulliSPRT(0.001, 0.05, alpha=0.001, beta=0.01)
    state = sprt.update(0, 100)
    assert state.decision == "h0"
    assert state.llr == pytest.approx(-100 * sprt.c)


def test_sprt_batch_update_equals_one_at_a_time_when_no_bound_is_crossed() -> None:
    one, batch = BernoulliSPRT(0.01, 0.05), BernoulliSPRT(0.01, 0.05)
    for failed in [False, True, False, False, True]:
        one.update_one(failed)
    assert batch.update(2, 5).llr == pytest.approx(one.state.llr)


# --- CUSUM -------------------------------------------------------------------------------------


def test_cusum_object_and_vectorised_paths_agree_and_floor_at_zero() -> None:
    rng = np.random.default_rng(3)
    failed = rng.random(2_000) < 0.03
    cusum = BernoulliCUSUM(0.01, 0.05, h=1e9)
    path = cusum_paths(failed, 0.01, 0.05)
    for i, f in enumerate(failed):
        assert cusum.update_one(bool(f)).statistic == pytest.approx(path[i], abs=1e-9)
    assert path.min() >= 0.0


def test_cusum_alarms_and_estimates_where_the_excursion_began() -> None:
    cusum = BernoulliCUSUM(0.001, 0.05, h=5.0)
    cusum.update(0, 500)
    assert cusum.state.statistic == 0.0 and cusum.state.change_index == 500
    cusum.update_one(True)
    state = cusum.update_one(True)
    assert state.alarm and state.change_index == 500
    cusum.reset()
    assert not cusum.state.alarm and cusum.state.n == 0


def test_markov_chain_arl_matches_simulated_run_lengths() -> None:
    p0, p1, h = 0.01, 0.05, 3.0
    rng = np.random.default_rng(4)
    paths = cusum_paths(rng.random((4_000, 6_000)) < p0, p0, p1)
    hit = paths >= h
    assert hit.any(axis=1).mean() > 0.99
    run_lengths = hit.argmax(axis=1)[hit.any(axis=1)] + 1.0
    predicted = cusum_arl(p0, p1, h)
    # Run lengths are close to geometric: standard error ~ ARL / sqrt(runs); truncation biases down a bit.
    assert run_lengths.mean() == pytest.approx(predicted, rel=0.06)
    delays = cusum_paths(rng.random((4_000, 2_000)) < p1, p0, p1) >= h
    assert (delays.argmax(axis=1) + 1.0).mean() == pytest.approx(cusum_arl(p0, p1, h, rate=p1), rel=0.05)


def test_threshold_for_arl_is_the_smallest_that_meets_the_target_and_obeys_lordens_bound() -> None:
    h = cusum_threshold_for_arl(0.001, 0.05, 50_000)
    assert cusum_arl(0.001, 0.05, h) >= 50_000
    assert cusum_arl(0.001, 0.05, h * 0.99) < 50_000
    assert h <= math.log(50_000)


def test_threshold_below_the_wait_for_one_failure_alarms_on_the_first_failure() -> None:
    h = cusum_threshold_for_arl(4e-6, 0.16, 10_000)
    assert h == pytest.approx(math.log(0.16 / 4e-6))
    assert cusum_arl(4e-6, 0.16, h) == pytest.approx(250_000, rel=1e-6)


def test_cusum_false_alarm_rate_stays_within_budget_over_a_million_healthy_probes() -> None:
    p0, p1, arl0 = 0.001, 0.05, 20_000
    h = cusum_threshold_for_arl(p0, p1, arl0)
    rng = np.random.default_rng(5)
    streams, length = 500, 2_000  # 10^6 healthy observations
    alarms = (cusum_paths(rng.random((streams, length)) < p0, p0, p1) >= h).any(axis=1)
    # Budget: run lengths are roughly geometric with mean >= arl0, so P(alarm within length) <= this.
    budget = 1.0 - math.exp(-length / arl0)
    assert alarms.sum() <= stats.binom.ppf(0.999, streams, budget)


def test_cusum_detects_an_injected_corruption_shift_soon_after_it_starts() -> None:
    p0, p1 = 0.001, 0.05
    h = cusum_threshold_for_arl(p0, p1, 100_000)
    rng = np.random.default_rng(6)
    before = rng.random((200, 3_000)) < p0
    after = rng.random((200, 2_000)) < p1
    paths = cusum_paths(np.concatenate([before, after], axis=1), p0, p1)
    alarm = paths >= h
    first = np.where(alarm.any(axis=1), alarm.argmax(axis=1), 10**9)
    early = first < 3_000
    assert early.mean() < 0.1  # healthy prefix: 3,000 probes against an ARL0 of 100,000
    delays = first[~early] - 3_000 + 1
    assert (delays < 2_000).all()
    assert np.median(delays) <= 2 * wald_asn(p0, p1).under_h1


# --- always-valid p-value ----------------------------------------------------------------------


def test_always_valid_p_value_matches_numerical_integration_of_the_mixture() -> None:
    f, n, p0, m, k = 4, 60, 0.01, 0.1, 10.0
    prior = stats.beta(k * m, k * (1 - m))

    def integrand(p: float) -> float:
        return float((p / p0) ** f * ((1 - p) / (1 - p0)) ** (n - f) * prior.pdf(p))

    mixture = integrate.quad(integrand, p0, 1, limit=200)[0] / prior.sf(p0)
    assert always_valid_p_value(f, n, p0, prior_mean=m, prior_strength=k) == pytest.approx(
        1 / mixture, rel=1e-6
    )


def test_always_valid_p_value_is_one_at_or_below_the_baseline_rate() -> None:
    assert always_valid_p_value(0, 1000, 0.01) == 1.0
    assert always_valid_p_value(10, 1000, 0.01) == 1.0


def test_always_valid_p_value_keeps_its_level_under_continuous_peeking() -> None:
    p0, runs, looks = 0.02, 1_000, np.arange(25, 2_001, 25)
    rng = np.random.default_rng(7)
    cum = np.cumsum(rng.random((runs, looks[-1])) < p0, axis=1)[:, looks - 1]
    min_p = np.array(
        [
            min(always_valid_p_value(int(f), int(n), p0) for f, n in zip(row, looks, strict=True))
            for row in cum
        ]
    )
    # Ville: P(any look <= 0.05) <= 0.05; allow binomial noise on 1,000 runs.
    assert (min_p <= 0.05).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_always_valid_p_value_becomes_small_after_a_real_shift() -> None:
    rng = np.random.default_rng(8)
    f = int((rng.random(300) < 0.05).sum())
    assert always_valid_p_value(f, 300, 0.001) < 1e-6


# --- Benjamini-Hochberg ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_benjamini_hochberg_agrees_with_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.random(80), rng.random(20) * 1e-3])
    for q in (0.01, 0.05, 0.2):
        assert np.array_equal(benjamini_hochberg(p, q), stats.false_discovery_control(p) <= q)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40))
def test_benjamini_hochberg_rejects_a_prefix_of_the_sorted_p_values(p: list[float]) -> None:
    reject = benjamini_hochberg(p, 0.1)
    assert np.array_equal(reject, stats.false_discovery_control(np.array(p)) <= 0.1)
    if reject.any():
        assert max(np.array(p)[reject]) <= min(np.array(p)[~reject], default=1.0)


def test_benjamini_hochberg_of_nothing_rejects_nothing() -> None:
    assert benjamini_hochberg([], 0.05).shape == (0,)


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


def test_minimum_sample_size_matches_the_textbook_199_per_arm() -> None:
    assert minimum_sample_size(0.1, 0.2, alpha=0.025, power=0.8) == 199
    assert sample_size_sufficient(199, 250, 0.1, 0.2, alpha=0.025)
    assert not sample_size_sufficient(198, 250, 0.1, 0.2, alpha=0.025)


def test_compare_rates_uses_boschloo_for_small_samples_and_agrees_with_scipy() -> None:
    r = compare_rates(7, 60, 1, 60)
    assert r.method == "boschloo"
    expected = stats.boschloo_exact([[7, 1], [53, 59]], alternative="greater").pvalue
    assert r.p_value == pytest.approx(expected)
    assert r.p_value < 0.05 and r.effect == pytest.approx(6 / 60)
    assert r.ci_low < r.effect < r.ci_high


def test_compare_rates_is_one_sided_towards_a_worse_canary() -> None:
    assert compare_rates(1, 60, 7, 60).p_value > 0.9


def test_compare_rates_falls_back_to_fisher_for_large_samples() -> None:
    r = compare_rates(30, 5000, 10, 5000)
    assert r.method == "fisher"
    assert r.p_value == pytest.approx(
        stats.fisher_exact([[30, 10], [4970, 4990]], alternative="greater").pvalue
    )


def test_peer_test_pools_the_peers_and_flags_a_cell_that_fails_more() -> None:
    r = peer_test(12, 400, [2, 1, 3], [400, 400, 400])
    assert r.baseline_rate == pytest.approx(6 / 1200)
    assert r.p_value == pytest.approx(
        stats.fisher_exact([[12, 6], [388, 1194]], alternative="greater").pvalue
    )
    assert r.p_value < 0.001
    assert peer_test(2, 400, 6, 1200).p_value > 0.3


# --- continuous values -------------------------------------------------------------------------


def test_compare_continuous_matches_scipy_and_recovers_a_known_shift() -> None:
    rng = np.random.default_rng(9)
    canary, base = rng.normal(2.0, 1.0, 300), rng.normal(0.0, 1.0, 400)
    r = compare_continuous(canary, base, alternative="greater")
    assert r.p_value == pytest.approx(stats.mannwhitneyu(canary, base, alternative="greater").pvalue)
    assert r.shift == pytest.approx(2.0, abs=0.2)
    assert r.ci_low < 2.0 < r.ci_high


def test_compare_continuous_thins_huge_samples_deterministically() -> None:
    rng = np.random.default_rng(10)
    canary, base = rng.normal(0.5, 1.0, 5_000), rng.normal(0.0, 1.0, 5_000)
    first, second = compare_continuous(canary, base), compare_continuous(canary, base)
    assert first == second
    assert first.shift == pytest.approx(0.5, abs=0.1)


# --- change point and sessions -----------------------------------------------------------------


def test_change_point_finds_an_injected_shift_in_simulated_streams() -> None:
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(50):
        stream = np.concatenate([rng.random(400) < 0.01, rng.random(200) < 0.2])
        errors.append(abs(change_point(stream) - 400))
    assert np.median(errors) <= 5
    assert np.mean(np.array(errors) <= 25) >= 0.9


def test_change_point_can_look_only_for_increases() -> None:
    stream = [True] * 20 + [False] * 200 + [True, False] * 30
    assert change_point(stream) == 20
    assert change_point(stream, alternative="greater") == 220


def test_change_point_of_a_constant_stream_is_the_earliest_split() -> None:
    assert change_point([False] * 10) == 1
    with pytest.raises(ValueError):
        change_point([True])


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
