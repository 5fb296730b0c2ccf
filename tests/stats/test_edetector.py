"""The mixture Shiryaev-Roberts detector: exact against its recursion; its run-length bound by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from canary.stats.edetector import (
    log_likelihood_ratios,
    log_shiryaev_roberts,
    run_detector,
    threshold_for_budget,
)


def test_the_closed_form_is_the_shiryaev_roberts_recursion_with_restarts() -> None:
    rng = np.random.default_rng(1)
    q0, delta = 0.02, 0.05
    failed = rng.random(3000) < 0.05
    h = math.log(200.0)
    z = log_likelihood_ratios(failed, np.full(failed.size, q0), [delta])[0]
    r, expected = 0.0, []
    for i, step in enumerate(z):
        r = (1.0 + r) * math.exp(step)  # R_t = (1 + R_{t-1}) L_t
        if r >= 200.0:
            expected.append(i)
            r = 0.0
    run = run_detector(failed, np.full(failed.size, q0), h, deltas=[delta])
    assert run.alarms == expected
    direct = [sum(math.exp(sum(z[j : i + 1])) for j in range(i + 1)) for i in range(50)]
    assert np.allclose(np.exp(log_shiryaev_roberts(z[:50])), direct)
    # Carrying R across chunks is the same as one pass.
    whole = log_shiryaev_roberts(z[:100])
    assert np.allclose(log_shiryaev_roberts(z[50:100], whole[49]), whole[50:])


def test_a_pass_costs_the_same_in_every_stratum_and_a_failure_more_where_it_is_rarer() -> None:
    z = log_likelihood_ratios([True, True, False, False], [0.001, 0.1, 0.001, 0.1], [0.05])
    assert z[0, 0] > z[0, 1] > 0
    assert z[0, 2] == z[0, 3] == pytest.approx(math.log(0.95))


def test_a_probe_that_always_fails_carries_no_evidence() -> None:
    z = log_likelihood_ratios(np.ones(100, bool), np.ones(100))
    assert np.all(np.abs(z) < 1e-6)


@pytest.mark.parametrize("budget", [200.0, 1000.0])
def test_mean_healthy_run_between_false_alarms_is_at_least_the_budget(budget: float) -> None:
    """Heterogeneous strata (0 % to 100 %), healthy at their true rates: ARL >= A, with MC error."""
    rng = np.random.default_rng(20251201)
    rates = np.array([0.0, 0.001, 0.01, 0.1, 0.5, 1.0])
    strata = rng.integers(0, rates.size, 400_000)
    failed = rng.random(strata.size) < rates[strata]
    q0 = np.maximum(rates[strata], 0.001)  # the floor a clean history gets
    h = threshold_for_budget(budget)
    run = run_detector(failed, q0, h)
    alarms = len(run.alarms)
    # The mean run between alarms is at least A: at most T/A alarms, plus 3 sigma of Monte Carlo error.
    allowed = strata.size / budget
    assert alarms <= allowed + 3 * math.sqrt(allowed), (alarms, allowed)


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.1])
def test_on_one_stratum_at_exactly_its_rate_the_budget_is_met_and_nearly_spent(rate: float) -> None:
    """The hardest case for the bound: the healthy rate is exactly q0 (E[L] = 1)."""
    rng = np.random.default_rng(11)
    failed = rng.random(1_000_000) < rate
    run = run_detector(failed, np.full(failed.size, rate), threshold_for_budget(1000.0))
    allowed = failed.size / 1000.0
    assert 0.5 * allowed <= len(run.alarms) <= allowed + 3 * math.sqrt(allowed), (len(run.alarms), allowed)


def test_a_fault_is_found_soon_after_it_starts_and_the_excursion_marks_its_start() -> None:
    rng = np.random.default_rng(7)
    healthy = rng.random(5000) < 0.001
    faulty = rng.random(2000) < 0.05
    failed = np.r_[healthy, faulty]
    run = run_detector(failed, np.full(failed.size, 0.002), threshold_for_budget(1e5))
    assert run.alarms and 5000 <= run.alarms[0] < 5400
    assert 4900 <= run.starts[0] <= run.alarms[0]


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
