"""Tests for canary.stats.stochastic_order: Kayenta's case, known values (closed forms, scipy's exact
binomial and permutation tests), Ville's bound under ties, discrete values and heavy tails, power."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import integrate, stats

from canary.stats.median_shift import log_e_above_half
from canary.stats.stochastic_order import (
    dominance_mde,
    dominance_power,
    dominance_sample_size,
    order_evidence,
    order_path,
    tail_payoffs,
)

KAYENTA_CANARY = (100.0,) * 7 + (1.0,) * 3
KAYENTA_BASELINE = (1.0,) * 10


def se(rate: float, n: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 1e-12) / n)


@pytest.mark.parametrize("shift", [0.0, 0.2])
def test_the_kayenta_case_reaches_one_over_alpha_at_ten_pairs_in_every_order(shift: float) -> None:
    orders = set(itertools.permutations(KAYENTA_CANARY))
    e = [math.exp(order_evidence(o, KAYENTA_BASELINE, shift).log_e) for o in orders]
    assert len(orders) == 120 and min(e) >= 20.0, min(e)  # 25.6 at shift 0.2, 40.8 at 0


def test_no_test_treating_each_side_as_a_set_could_exceed_the_exact_permutation_bound() -> None:
    """With two distinct values the exact permutation test is Fisher's (scipy): p = C(10,7)/C(20,7) =
    1/646 for Kayenta's case; an e-value with mean at most 1 over the splits cannot exceed 646 there."""
    result = stats.fisher_exact([[7, 3], [0, 10]], alternative="greater")
    assert result.pvalue == pytest.approx(math.comb(10, 7) / math.comb(20, 7))
    e = math.exp(order_evidence(KAYENTA_CANARY, KAYENTA_BASELINE, 0.2).log_e)
    assert 20.0 <= e <= 1.0 / result.pvalue


def test_the_sign_strategy_is_the_uniform_mixture_of_bets_in_closed_form() -> None:
    for wins, losses in [(7, 3), (0, 5), (12, 0), (30, 20)]:
        mixture, _ = integrate.quad(lambda lam, w=wins, lo=losses: (1 + lam) ** w * (1 - lam) ** lo, 0, 1)
        assert math.exp(log_e_above_half(wins, wins + losses)) == pytest.approx(mixture, rel=1e-9)
    # All n pairs won: (2^(n+1) - 1) / (n + 1).
    assert math.exp(log_e_above_half(10, 10)) == pytest.approx((2**11 - 1) / 11)


@pytest.mark.parametrize("pairs", [10, 25, 60])
def test_at_a_fixed_n_one_over_the_sign_e_value_is_a_valid_p_value_by_scipys_exact_binomial(
    pairs: int,
) -> None:
    """Fixed-sample analogue: for every count k, the exact null probability (scipy) of a sign
    e-value at least as large as at k is at most 1/e(k) (Markov), and the rejection region at
    1/alpha sits inside the exact one-sided binomial test's at alpha."""
    k = np.arange(pairs + 1)
    e = np.exp(log_e_above_half(k, pairs))
    for i in range(pairs + 1):
        tail = float(stats.binom.pmf(k[e >= e[i]], pairs, 0.5).sum())
        assert tail <= 1.0 / e[i] + 1e-12
    rejected = k[e >= 20.0]
    if rejected.size:
        assert stats.binomtest(int(rejected[0]), pairs, 0.5, alternative="greater").pvalue <= 0.05


def test_a_witness_is_fitted_on_the_earlier_pairs_only() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.lognormal(0, 1, 120), rng.lognormal(0, 1, 120)
    before = tail_payoffs(x, y)
    x2, y2 = x.copy(), y.copy()
    x2[70:], y2[70:] = rng.lognormal(3, 1, 50), rng.lognormal(-3, 1, 50)
    assert np.array_equal(tail_payoffs(x2, y2)[:71], before[:71])


def test_the_path_is_the_evidence_of_every_prefix() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.poisson(2, 150).astype(float), rng.poisson(2, 160).astype(float)
    path = order_path(x, y, 0.1)
    assert path.size == 150
    for k in (1, 2, 17, 64, 99, 150):
        assert path[k - 1] == pytest.approx(order_evidence(x[:k], y[:k], 0.1).log_e, abs=1e-9)
    assert order_evidence([], y).log_e == 0.0 and order_path([], y).size == 0


Draw = Callable[[np.random.Generator, int], np.ndarray]
NULLS: dict[str, Draw] = {
    "continuous": lambda rng, n: rng.lognormal(5.0, 0.5, n),
    "heavy-ties": lambda rng, n: rng.poisson(0.7, n).astype(float),  # half the values are 0
    "discrete": lambda rng, n: rng.integers(1, 6, n).astype(float),
    "heavy-tails": lambda rng, n: np.abs(rng.standard_cauchy(n)),
}


@pytest.mark.parametrize("case", sorted(NULLS))
def test_identical_sides_watched_after_every_pair_cross_one_over_alpha_at_most_alpha(case: str) -> None:
    """Ville's bound at the null's boundary (identical sides, no tolerance), 200 pairs, every pair a look."""
    rng, reps, draw = np.random.default_rng(sorted(NULLS).index(case) + 11), 300, NULLS[case]
    crossed = sum(
        bool(np.max(order_path(draw(rng, 200), draw(rng, 200), 0.0)) >= math.log(20.0)) for _ in range(reps)
    )
    rate = crossed / reps
    assert rate <= 0.05 + 3 * se(0.05, reps), f"{rate:.4f} ± {se(rate, reps):.4f} over {reps}"


def test_the_guaranteed_power_holds_for_the_product_test_at_the_derived_sample_size() -> None:
    """A lognormal shift of dominance 0.3 (no ties): the test sized for it by dominance_sample_size
    reaches 20 at its last pair at least as often as dominance_power says."""
    sigma, shift = 0.5, 0.2
    mu = math.log(1 + shift) + sigma * math.sqrt(2) * stats.norm.ppf(0.65)  # P(X > 1.2 Y) = 0.65
    n = dominance_sample_size(0.3, 20.0, 0.8)
    assert dominance_power(n, 0.3, 20.0) >= 0.8 > dominance_power(n - 8, 0.3, 20.0)
    rng, reps = np.random.default_rng(21), 300
    hits = 0
    for _ in range(reps):
        x, y = rng.lognormal(mu, sigma, n), rng.lognormal(0.0, sigma, n)
        hits += order_evidence(x, y, shift).log_e >= math.log(20.0)
    power = hits / reps
    assert power >= 0.8 - 3 * se(0.8, reps), f"{power:.3f} ± {se(power, reps):.3f}"


@pytest.mark.parametrize(("pairs", "dominance"), [(187, 0.3), (58, 0.5), (98, 0.4)])
def test_ties_do_not_lower_the_guaranteed_power_beyond_the_counts_discreteness(
    pairs: int, dominance: float
) -> None:
    """Power with a share ``tau`` of tied pairs, exactly: a binomial number of decisive pairs, each
    won with probability ``(1 - tau + delta) / (2 (1 - tau))``."""

    def tied_power(tau: float) -> float:
        win = (1 - tau + dominance) / (2 * (1 - tau))
        total = 0.0
        for decisive in range(pairs + 1):
            table = log_e_above_half(np.arange(decisive + 1), decisive)
            reached = np.nonzero(table >= math.log(40.0))[0]
            if reached.size:
                total += stats.binom.pmf(decisive, pairs, 1 - tau) * stats.binom.sf(
                    reached[0] - 1, decisive, win
                )
        return total

    untied = dominance_power(pairs, dominance, 20.0)
    assert tied_power(0.0) == pytest.approx(untied)
    for tau in (0.05, 0.1, 0.3, 0.5):
        assert tied_power(tau) >= untied - 0.005


def test_the_mde_shrinks_with_pairs_and_is_infinite_with_too_few() -> None:
    assert dominance_mde(5, 20.0, 0.8) == math.inf
    mdes = [dominance_mde(n, 20.0, 0.8) for n in (30, 100, 187, 500)]
    assert mdes == sorted(mdes, reverse=True) and mdes[2] <= 0.3 < mdes[1]
