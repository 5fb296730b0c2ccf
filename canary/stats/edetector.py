"""A stratified mixture Shiryaev-Roberts e-detector for failure streams, calibrated to a false-alarm budget.

The stream of one (cell, metric) is a sequence of *observations*: one per (pass, probe version),
``failed = True`` when any of that pass's repeats of the probe failed (repeats of a
temperature-0 probe fail together, so they are one clustered observation, not several). Each
observation belongs to a stratum (its probe version) with its own healthy rate ``q0``: a probe a
model always fails and one it never fails are compared each with itself.

Alternatives: a fault makes a fraction ``delta`` of the observations that would have passed
fail, ``q1 = q0 + delta (1 - q0)``. The likelihood ratio ``L`` of one observation is then
``q1/q0`` on a failure and ``1 - delta`` on a pass, whatever the stratum. A stratum with
``q0 = 1`` carries no evidence.

Detector: for each ``delta`` of a small grid, the Shiryaev-Roberts statistic
``R_t = (1 + R_{t-1}) L_t = sum_j prod_{i=j..t} L_i`` (a sum over every possible change point);
alarm when the weighted average ``sum_k w_k R_k`` reaches ``A``, then every statistic restarts
at zero. Why ``A`` is the mean healthy run between false alarms (Pollak 1987; Shin, Ramdas &
Rinaldo, "E-detectors", 2023): each ``R_k - t`` is a martingale under health when ``E[L] = 1``
(a supermartingale when ``E[L] <= 1``), so is any average of them with weights summing to 1,
and optional stopping at the alarm gives ``E[alarm time] >= A``. ``E[L] = 1`` holds when ``q0``
is the stratum's healthy rate; callers pass its predictive rate given the history
(:mod:`canary.detection.nulls`), which makes it hold on average over what the history leaves
uncertain. Nothing here needs the fault's size.

The grid and its weights follow the faults' scale: 0.2 % (a front door where 0.8 % of requests
are misrouted), 1.5 % and 5 % (corruption and top-k drops of a few percent) and 20 % (gross
faults), with half the weight on the last. A weight costs ``ln(1/w)`` nats of evidence: a gross
fault's evidence comes in jumps of 4-5 nats per failure, so every nat saved there is a failure
less to wait for, while a small fault's threshold of 15-20 nats is reached smoothly and its
``ln 10`` costs a few percent of its delay. The Shiryaev-Roberts sum dominates Page's CUSUM (a
max over the same products), so it alarms sooner for the same guarantee; the CUSUM's argmax still
estimates where the change began.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy.special import logsumexp

DEFAULT_DELTAS = (0.002, 0.015, 0.05, 0.2)
DEFAULT_WEIGHTS = (0.1, 0.2, 0.2, 0.5)
MAX_Q0 = 1.0 - 1e-9
CHUNK = 4096


def mixture_log_weights(
    deltas: Sequence[float], weights: Sequence[float] | None = None
) -> npt.NDArray[np.float64]:
    """``ln w_k`` of the alternatives: ``weights`` (the defaults' own for the default grid, else
    uniform), normalised to sum to 1."""
    if weights is None:
        weights = DEFAULT_WEIGHTS if tuple(deltas) == DEFAULT_DELTAS else [1.0] * len(deltas)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(deltas),) or not np.all(w > 0):
        raise ValueError(f"need one positive weight per alternative, got {list(weights)}")
    return np.asarray(np.log(w / w.sum()), dtype=np.float64)


def kl_bernoulli(p: float, q: float) -> float:
    """Kullback-Leibler divergence ``KL(Bern(p) || Bern(q))`` in nats, for ``0 < q < 1``.

    ``p ln(p/q) + (1-p) ln((1-p)/(1-q))`` with ``0 ln 0 = 0``.
    """
    return float(special.rel_entr(p, q) + special.rel_entr(1.0 - p, 1.0 - q))


def threshold_for_budget(observations_per_alarm: float) -> float:
    """The log threshold ``ln(A)`` that keeps the mean healthy run between false alarms at ``A`` or more."""
    if observations_per_alarm < 1:
        raise ValueError(f"observations_per_alarm must be at least 1, got {observations_per_alarm}")
    return math.log(observations_per_alarm)


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


def log_shiryaev_roberts(
    z: npt.NDArray[np.float64], log_start: npt.ArrayLike = -np.inf
) -> npt.NDArray[np.float64]:
    """``ln R_t`` along the last axis from ``R_0 = exp(log_start)`` (0 by default), in closed form.

    With ``W_t = z_1 + ... + z_t``: ``R_t = exp(W_t) (R_0 + sum_{j<=t} exp(-W_{j-1}))``, so
    ``ln R_t = W_t + logcumsumexp(ln R_0, -W_0, -W_1, ...)``: a cumulative sum and a running
    log-sum-exp.
    """
    w = np.cumsum(z, axis=-1)
    before = np.concatenate([np.zeros((*w.shape[:-1], 1)), -w[..., :-1]], axis=-1)
    before[..., 0] = np.logaddexp(np.asarray(log_start, dtype=np.float64), 0.0)
    return w + np.logaddexp.accumulate(before, axis=-1)


@dataclass(frozen=True)
class DetectorRun:
    """One pass of the detector over a stream.

    ``alarms`` are the indices of the observations at which it alarmed (after each it restarted),
    ``starts`` where each alarm's likeliest change point lies (the CUSUM's argmax for the
    leading alternative), ``peak`` the mixture statistic ``ln((1/K) sum_k R_k)`` at the last
    alarm and ``delta`` the alternative that led it (at the end of the stream without an alarm);
    ``statistic`` is the mixture statistic at the end.
    """

    alarms: list[int]
    starts: list[int]
    statistic: float
    threshold: float
    delta: float
    peak: float

    @property
    def alarmed(self) -> bool:
        return bool(self.alarms)


def _change_point(z: npt.NDArray[np.float64], upto: int) -> int:
    """The ``j <= upto`` maximising ``z_j + ... + z_upto``: where the excursion began."""
    w = np.concatenate([[0.0], np.cumsum(z[: upto + 1])])
    return int(np.argmin(w[: upto + 1]))


def run_detector(
    failed: npt.ArrayLike,
    q0: npt.ArrayLike,
    threshold: float,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    weights: Sequence[float] | None = None,
) -> DetectorRun:
    """Run the mixture Shiryaev-Roberts detector over a stream (oldest first), restarting after alarms.

    1. Compute every alternative's LLRs.
    2. From the current start, every ``ln R_k`` in closed form and their log-average; the first
       index where it reaches ``threshold`` is an alarm.
    3. Restart after it and repeat until the stream ends (alarms are rare, so few segments).
    """
    z = log_likelihood_ratios(failed, q0, deltas)
    t, k = z.shape[1], len(deltas)
    log_w = mixture_log_weights(deltas, weights)
    alarms: list[int] = []
    starts: list[int] = []
    state = np.full(k, -np.inf)  # ln R_k where the chunk begins
    begin, start, peak, lead, final = 0, 0, 0.0, 0, -math.inf
    while start < t:
        # Chunks bound the work after each restart; the state carries R across them.
        logs = log_shiryaev_roberts(z[:, start : start + CHUNK], state)
        mixture = logsumexp(logs + log_w[:, None], axis=0)
        hit = np.flatnonzero(mixture >= threshold)
        if hit.size == 0:
            state, start = logs[:, -1], start + logs.shape[1]
            final = float(mixture[-1])
            continue
        i = int(hit[0])
        lead = int(np.argmax(logs[:, i]))
        alarms.append(start + i)
        starts.append(begin + _change_point(z[lead, begin:], start + i - begin))
        peak = float(mixture[i])
        begin = start = start + i + 1
        state, final = np.full(k, -np.inf), -math.inf
    if not alarms and t:
        lead = int(np.argmax(state))
    return DetectorRun(alarms, starts, max(final, 0.0), threshold, float(deltas[lead]), peak)
