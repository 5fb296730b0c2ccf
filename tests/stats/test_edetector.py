"""The stratified mixture CUSUM: exact against Page's recursion, and its run-length bound by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from canary.stats import BernoulliCUSUM
from canary.stats.edetector import log_likelihood_ratios, run_detector, threshold_for_budget


def test_one_alternative_on_one_stratum_is_pages_cusum_with_restarts() -> None:
    rng = np.random.default_rng(1)
    q0, delta, h = 0.02, 0.05, 4.0
    failed = rng.random(3000) < 0.05
    reference = BernoulliCUSUM(q0, q0 + delta * (1 - q0), h)
    expected = []
    for i, x in enumerate(failed):
        if reference.update_one(bool(x)).alarm:
            expected.append(i)
            reference.reset()
    run = run_detector(failed, np.full(failed.size, q0), h, deltas=[delta])
    assert run.alarms == expected
    assert run.statistic == pytest.approx(reference.state.statistic)


def test_a_pass_costs_the_same_in_every_stratum_and_a_failure_more_where_it_is_rarer() -> None:
    z = log_likelihood_ratios([True, True, False, False], [0.001, 0.1, 0.001, 0.1], [0.05])
    assert z[0, 0] > z[0, 1] > 0
    assert z[0, 2] == z[0, 3] == pytest.approx(math.log(0.95))


def test_a_probe_that_always_fails_carries_no_evidence() -> None:
    run = run_detector(np.ones(10_000, bool), np.ones(10_000), threshold=3.0)
    assert run.alarms == [] and run.statistic < 1e-3


@pytest.mark.parametrize("budget", [200.0, 1000.0])
def test_mean_healthy_run_between_false_alarms_is_at_least_the_budget(budget: float) -> None:
    """Heterogeneous strata (0 % to 100 %), healthy at their true rates: ARL >= A, with MC error."""
    rng = np.random.default_rng(20251201)
    rates = np.array([0.0, 0.001, 0.01, 0.1, 0.5, 1.0])
    strata = rng.integers(0, rates.size, 400_000)
    failed = rng.random(strata.size) < rates[strata]
    q0 = np.maximum(rates[strata], 0.001)  # the floor a clean history gets
    h = threshold_for_budget(budget, 5)
    run = run_detector(failed, q0, h)
    alarms = len(run.alarms)
    # Poisson upper bound on the alarm count the budget allows, 3 sigma of Monte Carlo error.
    allowed = strata.size / budget
    assert alarms <= allowed + 3 * math.sqrt(allowed), (alarms, allowed)


def test_a_fault_is_found_soon_after_it_starts_and_the_excursion_marks_its_start() -> None:
    rng = np.random.default_rng(7)
    healthy = rng.random(5000) < 0.001
    faulty = rng.random(2000) < 0.05
    failed = np.r_[healthy, faulty]
    run = run_detector(failed, np.full(failed.size, 0.002), threshold_for_budget(1e5, 5))
    assert run.alarms and 5000 <= run.alarms[0] < 5400


def test_cmh_on_one_stratum_is_pearsons_chi_square_scaled_by_n_minus_1_over_n() -> None:
    from scipy import stats

    from canary.stats.rates import cmh_test

    a, n1, b, n2 = 12, 100, 4, 120
    chi2 = stats.chi2_contingency([[a, n1 - a], [b, n2 - b]], correction=False)[0]
    result = cmh_test([a], [n1], [b], [n2], correction=False)
    assert result.z**2 == pytest.approx(chi2 * (n1 + n2 - 1) / (n1 + n2))
    assert result.p_value == pytest.approx(stats.norm.sf(result.z))


def test_cmh_ignores_a_probe_both_sides_always_fail_and_sees_a_gap_on_the_others() -> None:
    from canary.stats.rates import cmh_test

    gap = cmh_test([10, 50], [50, 50], [1, 50], [50, 50])
    without = cmh_test([10], [50], [1], [50])
    assert gap.z == pytest.approx(without.z) and gap.p_value < 0.01
