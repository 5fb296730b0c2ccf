"""A stratified mixture CUSUM e-detector for failure streams, calibrated to a false-alarm budget.

The stream of one (cell, metric) is a sequence of *observations*: one per (pass, probe version),
``failed = True`` when any of that pass's repeats of the probe failed (repeats of a
temperature-0 probe fail together, so they are one clustered observation, not several). Each
observation belongs to a stratum (its probe version) with its own healthy rate ``q0``: a probe a
model always fails and one it never fails are compared each with itself.

Alternatives: a fault makes a fraction ``delta`` of the observations that would have passed
fail, ``q1 = q0 + delta (1 - q0)``. The log-likelihood ratio of one observation is then
``ln(q1/q0)`` on a failure and ``ln(1 - delta)`` on a pass, whatever the stratum. A stratum with
``q0 = 1`` carries no evidence (both of its outcomes give ``ln 1 = 0`` or it cannot pass).

Detector: for each ``delta`` of a small grid, Page's CUSUM ``S = max(0, S + llr)``; alarm when
``max_k S_k >= ln(A) + ln(K)``, then every statistic restarts at zero. Why that bound holds
(Shin, Ramdas & Rinaldo, "E-detectors", 2023; Lorden 1971): each CUSUM is at most its
Shiryaev-Roberts statistic ``R_t = sum_j prod_{i=j..t} L_i``, and the average ``(1/K) sum_k R_k``
has expectation ``t`` after ``t`` healthy observations, so by the optional stopping argument
the mean number of healthy observations before an alarm is at least ``A``. The bound needs
``E[L] <= 1`` under health, which holds when the true rate is at most ``q0``: callers pass an
upper confidence bound of the stratum's history. Nothing here needs the fault's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_DELTAS = (0.005, 0.015, 0.05, 0.15, 0.4)
MAX_Q0 = 1.0 - 1e-9


def threshold_for_budget(observations_per_alarm: float, alternatives: int) -> float:
    """The log threshold ``ln(A) + ln(K)`` that keeps the mean healthy run length at ``A`` or more."""
    if observations_per_alarm < 1:
        raise ValueError(f"observations_per_alarm must be at least 1, got {observations_per_alarm}")
    if alternatives < 1:
        raise ValueError(f"alternatives must be at least 1, got {alternatives}")
    return math.log(observations_per_alarm) + math.log(alternatives)


def log_likelihood_ratios(
    failed: npt.ArrayLike, q0: npt.ArrayLike, deltas: Sequence[float] = DEFAULT_DELTAS
) -> npt.NDArray[np.float64]:
    """Per-observation LLRs, shape ``(K, T)``: row ``k`` tests ``q0 + delta_k (1 - q0)`` against ``q0``."""
    x = np.asarray(failed, dtype=bool)
    q = np.clip(np.asarray(q0, dtype=np.float64), 1e-12, MAX_Q0)
    d = np.asarray(deltas, dtype=np.float64)[:, None]
    if x.shape != q.shape:
        raise ValueError(f"failed and q0 differ in shape: {x.shape} vs {q.shape}")
    if not np.all((d > 0) & (d < 1)):
        raise ValueError(f"every delta must be in (0, 1), got {list(deltas)}")
    on_failure = np.log1p(d * (1.0 - q) / q)
    on_pass = np.broadcast_to(np.log1p(-d), on_failure.shape)
    return np.where(x, on_failure, on_pass)


def _cusum(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Page's recursion from zero along the last axis, in closed form (Lindley): ``W_t - min(0, min W)``."""
    w = np.cumsum(z, axis=-1)
    return w - np.minimum(np.minimum.accumulate(w, axis=-1), 0.0)


@dataclass(frozen=True)
class DetectorRun:
    """One pass of the detector over a stream.

    ``alarms`` are the indices of the observations at which it alarmed (after each it restarted),
    ``starts`` where each alarm's excursion left zero (its likeliest change point),
    ``peak`` the statistic at the last alarm and ``delta`` the alternative that raised it (at
    the end of the stream when it never alarmed); ``statistic`` is the final ``max_k S_k``;
    ``excursion_start`` the index where the excursion behind the last alarm (or the current one)
    left zero, the likeliest change point.
    """

    alarms: list[int]
    starts: list[int]
    statistic: float
    threshold: float
    excursion_start: int
    delta: float
    peak: float

    @property
    def alarmed(self) -> bool:
        return bool(self.alarms)


def _excursion_start(path: npt.NDArray[np.float64], upto: int) -> int:
    """Index after the last zero of ``path`` before ``upto`` (0 when it never sat at zero)."""
    zeros = np.flatnonzero(path[:upto] <= 0.0)
    return int(zeros[-1]) + 1 if zeros.size else 0


def run_detector(
    failed: npt.ArrayLike,
    q0: npt.ArrayLike,
    threshold: float,
    deltas: Sequence[float] = DEFAULT_DELTAS,
) -> DetectorRun:
    """Run the mixture CUSUM over a stream (oldest first), restarting after every alarm.

    1. Compute every alternative's LLRs.
    2. From the current start, the CUSUM paths in closed form; the first index where the largest
       reaches ``threshold`` is an alarm.
    3. Restart after it and repeat until the stream ends (alarms are rare, so few segments).
    """
    z = log_likelihood_ratios(failed, q0, deltas)
    t = z.shape[1]
    alarms: list[int] = []
    starts: list[int] = []
    start, excursion, peak, lead = 0, 0, 0.0, 0
    final = np.zeros(len(deltas))
    while start < t:
        paths = _cusum(z[:, start:])
        top = paths.max(axis=0)
        hit = np.flatnonzero(top >= threshold)
        if hit.size == 0:
            final = paths[:, -1]
            if not alarms:
                lead = int(np.argmax(final))
                excursion = start + _excursion_start(paths[lead], paths.shape[1])
            break
        i = int(hit[0])
        lead = int(np.argmax(paths[:, i]))
        alarms.append(start + i)
        peak = float(paths[lead, i])
        excursion = start + _excursion_start(paths[lead], i + 1)
        starts.append(excursion)
        start += i + 1
        final = np.zeros(len(deltas))
    return DetectorRun(alarms, starts, float(final.max()), threshold, excursion, float(deltas[lead]), peak)


def evidence_for_health(failed: npt.ArrayLike, q0: npt.ArrayLike, delta: float) -> float:
    """Log-likelihood ratio of health (``q0``) against the alternative ``delta`` over the observations.

    After an alarm, this is how strongly the observations since say the fault is over.
    """
    x = np.asarray(failed, dtype=bool)
    if x.size == 0:
        return 0.0
    return float(-log_likelihood_ratios(x, q0, [delta])[0].sum())
