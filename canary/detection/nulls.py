"""Each observation's healthy rate ``q0``: its stratum's predictive rate, frozen while an excursion lasts.

Pure. ``q0`` is the Bayesian predictive probability that the observation fails given its
stratum's history (Jeffreys prior): ``(f + 1/2) / (n + 1)`` over the stratum's ``f`` failing
observations of ``n`` (its baseline plus its earlier observations in the look-back, up to
``window_s`` before this one), floored at ``baseline_floor``. Why the predictive rate and not an
upper confidence bound: averaged over what the history leaves uncertain about the rate, it makes
every likelihood ratio of the detector exactly 1 in expectation on a healthy stream (the
detector's guarantee needs that, see :mod:`canary.stats.edetector`), where an upper bound makes
it below 1 and throws away power — at the front door's 5 % -> 5.2 % the 95 % bound of a million
observations alone ate a sixth of the effect.

**Frozen in an excursion.** A stratum's history stops growing where the detector's evidence last
stood at zero: a one-sided CUSUM (Page) of the smallest alternative of the grid, run over the
stream with the unfrozen rates, marks where the current excursion began, and observations after
that point do not enter any stratum's history (never cutting it below
``min_baseline_observations``). Without it a fault older than ``window_s`` becomes its own
baseline while it is being detected, so ``q0`` rises with the fault and a small fault is found
late or never. On a healthy stream excursions are short and ``q0`` is the same up to the few
observations they hold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts
from canary.stats.edetector import DEFAULT_DELTAS, log_likelihood_ratios

MAX_NULL_RATE = 0.99


def predictive_rate(failures: npt.ArrayLike, n: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The Jeffreys posterior mean ``(f + 1/2) / (n + 1)``: the chance the next observation fails."""
    return (np.asarray(failures, np.float64) + 0.5) / (np.asarray(n, np.float64) + 1.0)


def window_cuts(at: npt.NDArray[np.float64], window_s: float) -> npt.NDArray[np.int64]:
    """Per observation, how many of the stream's observations are at least ``window_s`` older."""
    return np.searchsorted(at, at - window_s, side="right").astype(np.int64)


def excursion_starts(
    failed: npt.NDArray[np.bool_], q0: npt.NDArray[np.float64], usable: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Per observation, how many of the stream's observations lie before the current excursion.

    The CUSUM ``S = max(0, S + z)`` of the grid's smallest alternative over the usable
    observations; an observation's excursion began after the last usable observation before it
    at which ``S`` was zero (or at the first usable observation).
    """
    out = np.zeros(failed.size, np.int64)
    idx = np.flatnonzero(usable)
    if idx.size == 0:
        return out
    z = log_likelihood_ratios(failed[idx], q0[idx], DEFAULT_DELTAS[:1])[0]
    w = np.cumsum(z)
    at_zero = w <= np.minimum.accumulate(np.minimum(w, 0.0))
    # The last zero strictly before each usable observation: cut just after it.
    cut_after = np.where(at_zero, idx + 1, idx[0])
    last = np.maximum.accumulate(np.r_[idx[0], cut_after[:-1]])
    # Unusable observations take the cut of the usable observation that follows them (or the last).
    follow = np.minimum(np.searchsorted(idx, np.arange(failed.size)), idx.size - 1)
    return np.asarray(last[follow], np.int64)


def stratum_seen(stratum: npt.NDArray[np.int64], cuts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per observation, how many of its stratum's observations are among the stream's first ``cuts``."""
    seen = np.zeros(stratum.size, np.int64)
    for s in np.unique(stratum):
        idx = np.flatnonzero(stratum == s)
        seen[idx] = np.searchsorted(idx, cuts[idx])
    return seen


def stratum_counts(
    failed: npt.NDArray[np.bool_],
    stratum: npt.NDArray[np.int64],
    baseline: Mapping[int, Counts],
    seen: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per observation, its stratum's (failing, observations): baseline plus its first ``seen``."""
    prior_f = np.zeros(failed.size)
    prior_n = np.zeros(failed.size)
    for s in np.unique(stratum):
        idx = np.flatnonzero(stratum == s)
        base = baseline.get(int(s), Counts())
        prior_f[idx] = base.failures + np.r_[0, np.cumsum(failed[idx])][seen[idx]]
        prior_n[idx] = base.n + seen[idx]
    return prior_f, prior_n


def clip_rates(q0: npt.NDArray[np.float64], spec: DetectionSpec) -> npt.NDArray[np.float64]:
    return np.clip(q0, spec.baseline_floor, MAX_NULL_RATE)


def null_rates_of(
    at: npt.NDArray[np.float64],
    failed: npt.NDArray[np.bool_],
    stratum: npt.NDArray[np.int64],
    baseline: Mapping[int, Counts],
    spec: DetectionSpec,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """``q0`` per observation and whether its stratum had enough history before it.

    1. Unfrozen: each stratum's history up to ``window_s`` before the observation.
    2. The excursion starts (:func:`excursion_starts`) over the usable observations.
    3. Frozen: the history up to the earlier of the two cuts.
    Observations of a stratum whose rate reaches ``MAX_NULL_RATE`` are not usable: a rise cannot
    show there, and the Shiryaev-Roberts statistic would only count them as time.
    """
    seen = stratum_seen(stratum, window_cuts(at, spec.window_s))
    prior_f, prior_n = stratum_counts(failed, stratum, baseline, seen)
    loose = predictive_rate(prior_f, prior_n)
    usable = (prior_n >= spec.min_baseline_observations) & (loose < MAX_NULL_RATE)
    frozen = stratum_seen(stratum, excursion_starts(failed, clip_rates(loose, spec), usable))
    # Never below the history that made the observation usable.
    floor = np.minimum(seen, np.maximum(spec.min_baseline_observations - (prior_n - seen), 0)).astype(
        np.int64
    )
    prior_f, prior_n = stratum_counts(failed, stratum, baseline, np.maximum(np.minimum(seen, frozen), floor))
    return clip_rates(predictive_rate(prior_f, prior_n), spec), usable
