"""Null rates: the stratum's predictive rate, frozen while an excursion lasts; incidents that clear."""

from __future__ import annotations

import numpy as np
import pytest

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts
from canary.detection.nulls import excursion_starts, null_rates_of, predictive_rate
from canary.detection.sequential import Stream, evaluate
from canary.stats.edetector import mixture_log_weights

SPEC = DetectionSpec()
STEP_S = 30.0  # 10 probe versions every 5 minutes: one window_s is 120 observations


def one_stratum(failed: np.ndarray, base: Counts) -> tuple[np.ndarray, np.ndarray]:
    at = np.arange(failed.size) * STEP_S
    return null_rates_of(at, failed, np.zeros(failed.size, np.int64), {0: base}, SPEC)


def test_the_predictive_rate_is_the_jeffreys_posterior_mean() -> None:
    assert predictive_rate(0, 0) == pytest.approx(0.5)
    assert predictive_rate(3, 99) == pytest.approx(3.5 / 100)
    rng = np.random.default_rng(3)
    healthy = rng.random(2000) < 0.05
    q0, usable = one_stratum(healthy, Counts(50, 1000))
    # Outside excursions q0 is the history up to window_s before: baseline plus the older runs.
    i = 1500
    older = i - int(SPEC.window_s / STEP_S)
    assert usable.all()
    assert q0[i] <= predictive_rate(50 + healthy[:older].sum(), 1000 + older) + 1e-12


def test_a_faults_observations_do_not_become_its_baseline_while_it_lasts() -> None:
    rng = np.random.default_rng(4)
    base = Counts(5_000, 100_000)  # 5 %
    failed = np.r_[rng.random(1000) < 0.05, rng.random(6000) < 0.2]
    q0, _ = one_stratum(failed, base)
    older = failed.size - 1 - int(SPEC.window_s / STEP_S)
    unfrozen = predictive_rate(base.failures + failed[:older].sum(), base.n + older)
    assert unfrozen > 0.056 and q0[-1] < 0.051  # the fault's 20 % never entered
    # The excursion starts at the fault (give or take the first fault observations).
    cut = excursion_starts(failed, np.full(failed.size, 0.05), np.ones(failed.size, bool))
    assert 700 <= cut[-1] <= 1100


def test_a_new_probe_version_is_never_frozen_below_its_minimum_history() -> None:
    failed = np.ones(200, bool)  # a new version that fails from its first observation
    q0, usable = one_stratum(failed, Counts())
    first = int(np.argmax(usable))  # 20 observations at least window_s older
    assert first == int(SPEC.window_s / STEP_S) + SPEC.min_baseline_observations - 1
    assert q0[first] == pytest.approx(predictive_rate(20, 20))  # its 20 observations, not fewer


def stream_of(failed: np.ndarray, p0: float) -> Stream:
    at = np.arange(failed.size) * STEP_S
    n = failed.size
    ones = np.ones(n, np.int64)
    base = {0: Counts(int(p0 * 1_000_000), 1_000_000)}
    return Stream(
        1, "c", "m", at, np.zeros(n, np.int64), ones, failed.astype(np.int64), base, np.arange(n) // 10
    )


@pytest.mark.parametrize(("p0", "p1"), [(0.001, 0.05), (0.002, 0.03)])
def test_a_removed_fault_clears_within_two_windows_however_long_ago_its_last_alarm(
    p0: float, p1: float
) -> None:
    rng = np.random.default_rng(8)
    per_window = SPEC.window_s / STEP_S
    waits = []
    for _ in range(15):
        failed = np.r_[rng.random(600) < p1, rng.random(3000) < p0]
        result = evaluate(stream_of(failed, p0), SPEC, 1e6)
        assert result is not None
        chain = [c for c in result.incidents if c.start < 600]
        assert chain and chain[-1].cleared_at is not None
        waits.append(max(0, chain[-1].cleared_at - 600) / per_window)
    assert float(np.median(waits)) <= 2.0, waits


def test_a_fault_that_persists_is_rarely_cleared() -> None:
    rng = np.random.default_rng(9)
    cleared = 0
    for _ in range(20):
        failed = rng.random(2400) < 0.05  # 20 windows of a 5 % fault on a 0.1 % probe
        result = evaluate(stream_of(failed, 0.001), SPEC, 1e6)
        assert result is not None and result.incidents
        cleared += sum(c.cleared_at is not None for c in result.incidents)
    assert cleared <= 20 * 1.0, cleared  # at most one false clearance per 20 windows on average


def test_mixture_weights_are_normalised_and_uniform_off_the_default_grid() -> None:
    assert np.exp(mixture_log_weights((0.1, 0.2), None)) == pytest.approx([0.5, 0.5])
    assert np.exp(mixture_log_weights((0.1, 0.2), (1.0, 3.0))) == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="positive weight"):
        mixture_log_weights((0.1, 0.2), (1.0,))
