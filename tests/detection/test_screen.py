"""The batched screen of detection rounds against the straightforward per-stream path, on random streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts
from canary.detection.screen import _dense_unique, _null_rate_bounds, may_alarm
from canary.detection.sequential import (
    Stream,
    evaluate,
    null_rates,
    observations_per_alarm,
    self_candidate,
)

NOW = 1_764_000_000.123456


def random_streams(seed: int, count: int) -> list[Stream]:
    """Streams of 1-4 strata, passes 360 s apart (so cut-offs tie exactly), some with a fault."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        passes, strata = int(rng.integers(1, 80)), int(rng.integers(1, 5))
        ids = rng.choice(np.arange(1, 50), strata, replace=False)
        at = np.repeat(NOW - 6 * 3600 + 360.0 * np.arange(passes) + rng.random() * 360, strata)
        rate = np.repeat(rng.choice([0.0, 0.01, 0.05, 0.5, 1.0], strata)[None], passes, 0).ravel()
        if rng.random() < 0.3:  # a fault part way through
            rate[at > at[0] + rng.random() * (at[-1] - at[0])] += rng.choice([0.05, 0.3, 0.9])
        failures = (rng.random(at.size) < rate).astype(np.int64)
        baseline = {
            int(p): Counts(int(rng.integers(0, 3)), int(rng.integers(0, 200)))
            for p in ids
            if rng.random() < 0.8
        }
        stratum = np.tile(ids, passes).astype(np.int64)
        batch = np.repeat(np.arange(passes), strata)
        runs = np.ones(at.size, np.int64)
        out.append(Stream(i, f"c{i}", "m", at, stratum, runs, failures, baseline, batch))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_screens_null_rates_bound_the_per_stream_ones_from_below(seed: int) -> None:
    """Same usable observations; ``q0`` never above the per-stream one, and equal outside excursions."""
    spec = DetectionSpec()
    streams = random_streams(seed, 300)
    q0, usable, sizes = _null_rate_bounds(streams, spec)
    bounds = np.cumsum(sizes)[:-1]
    equal = total = 0
    for s, rates, use in zip(streams, np.split(q0, bounds), np.split(usable, bounds), strict=True):
        expected_q0, expected_usable = null_rates(s, spec)
        np.testing.assert_array_equal(use, expected_usable)
        assert np.all(rates[use] <= expected_q0[use])
        equal += int(np.isclose(rates[use], expected_q0[use], rtol=1e-6).sum())
        total += int(use.sum())
    assert equal >= 0.5 * total  # a bound, not a guess: most rates are the stratum's own


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_screen_keeps_every_stream_that_alarms(seed: int) -> None:
    """Screened out means the per-stream path finds no alarm and no candidate; and it screens most out."""
    spec = DetectionSpec()
    streams = random_streams(seed, 400)
    budgets = [observations_per_alarm(s, spec, NOW, 4) for s in streams]
    kept = may_alarm(streams, spec, [math.log(a) for a in budgets])
    alarmed = []
    for s, a, keep in zip(streams, budgets, kept, strict=True):
        result = evaluate(s, spec, a)
        alarms = result is not None and result.run.alarmed
        alarmed.append(alarms)
        if not keep:
            assert not alarms
            assert self_candidate(s, spec, NOW, 4) is None
    quiet = ~np.array(alarmed)
    assert not quiet.all()
    assert (quiet & ~kept).sum() >= 0.5 * quiet.sum()  # the screen does spare work


def test_screen_of_no_streams_and_of_streams_without_usable_observations() -> None:
    spec = DetectionSpec()
    assert may_alarm([], spec, []).size == 0
    empty = Stream(1, "c", "m", np.array([NOW]), np.array([1]), np.array([1]), np.array([1]), {})
    assert not may_alarm([empty], spec, [1.0]).any()


@pytest.mark.parametrize("values", [[3, 1, 3, 7, 1], [0], [], [5, -2, 5], [10**9, 2, 10**9]])
def test_unique_by_counting_is_numpys_unique(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    uniques, inverse = _dense_unique(array)
    expected, expected_inverse = np.unique(array, return_inverse=True)
    assert uniques.tolist() == expected.tolist()
    assert inverse.tolist() == expected_inverse.ravel().tolist()
