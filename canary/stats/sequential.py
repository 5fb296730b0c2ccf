"""Sequential detectors over a Bernoulli failure stream: Wald's SPRT, Page's CUSUM, a mixture martingale.

Every probe run yields a Bernoulli outcome (failed or not). Under H0 a (cell, metric) stream fails at
rate ``p0`` (its healthy baseline); under H1 at ``p1 > p0``. The log-likelihood ratio of one
observation is ``+a = ln(p1/p0)`` on a failure and ``-c = ln((1-p1)/(1-p0))`` (negative) on a pass.

- :class:`BernoulliSPRT` is Wald's test (Wald 1945, *Sequential Analysis*, 1947): stop at H1 when the
  summed LLR reaches ``ln A = ln((1-beta)/alpha)``, at H0 when it falls to ``ln B = ln(beta/(1-alpha))``.
- :class:`BernoulliCUSUM` is Page's CUSUM (Page 1954): the SPRT restarted every time it would accept H0,
  i.e. ``S_t = max(0, S_{t-1} + llr_t)``, alarm when ``S_t >= h``. Lorden (1971) showed it is
  asymptotically optimal for the worst-case detection delay at a given in-control average run length.
- :func:`cusum_arl` computes average run lengths exactly for a lattice version of the chain
  (Brook & Evans 1972), and :func:`cusum_threshold_for_arl` inverts it.
- :func:`always_valid_p_value` is a beta-mixture likelihood-ratio martingale (Robbins 1970) with
  Ville's inequality, so p-values from many streams can go through Benjamini-Hochberg at any time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import linalg, special

Decision = Literal["h0", "h1"]


def _check_rates(p0: float, p1: float) -> None:
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")


def llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """Return ``(a, c)``: the LLR added by a failure (``a > 0``) and subtracted by a pass (``c > 0``).

    ``a = ln(p1/p0)``, ``c = ln((1-p0)/(1-p1))``; ``log1p`` keeps ``c`` accurate for rare events.
    """
    _check_rates(p0, p1)
    return math.log(p1 / p0), math.log1p(-p0) - math.log1p(-p1)


def kl_bernoulli(p: float, q: float) -> float:
    """Kullback-Leibler divergence ``KL(Bern(p) || Bern(q))`` in nats, for ``0 < q < 1``.

    ``p ln(p/q) + (1-p) ln((1-p)/(1-q))`` with ``0 ln 0 = 0``.
    """
    return float(special.rel_entr(p, q) + special.rel_entr(1.0 - p, 1.0 - q))


class ASN(NamedTuple):
    """Wald's approximate average sample numbers of an SPRT, under H1 and under H0."""

    under_h1: float
    under_h0: float


def wald_asn(p0: float, p1: float, alpha: float = 0.001, beta: float = 0.01) -> ASN:
    """Wald's approximate average sample number of the Bernoulli SPRT under H1 and under H0.

    Ignoring overshoot (Wald 1947, ch. 3): with ``ln A = ln((1-beta)/alpha)``, ``ln B = ln(beta/(1-alpha))``

        E1[N] = ((1-beta) ln A + beta ln B) / KL(p1 || p0)
        E0[N] = ((1-alpha) ln B + alpha ln A) / -KL(p0 || p1)

    Worked numbers of the design doc (alpha=0.001, beta=0.01): p0=0.001 -> p1=0.05 gives 45.9 (~46);
    a front door where 0.8 % of requests are misrouted and misrouted answers err 25 points more often
    (p1 = p0 + 0.008*0.25) gives ~163,000 only for a healthy wrong-answer rate p0 = 0.05 (163,109);
    at p0=0.01 it would be 35,700, at p0=0.1 307,000.
    """
    _check_rates(p0, p1)
    log_a, log_b = math.log((1.0 - beta) / alpha), math.log(beta / (1.0 - alpha))
    h1 = ((1.0 - beta) * log_a + beta * log_b) / kl_bernoulli(p1, p0)
    h0 = ((1.0 - alpha) * log_b + alpha * log_a) / -kl_bernoulli(p0, p1)
    return ASN(under_h1=h1, under_h0=h0)


def mean_wait_for_event(rate: float) -> float:
    """Mean number of probes until the first event of probability ``rate`` per probe: ``1/rate``.

    A probe that records which pool served it sees the first misroute at 0.8 % prevalence after
    ``1/0.008 = 125`` probes on average (geometric distribution; the median is ``ln 2 / rate`` ~ 87).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    return 1.0 / rate


@dataclass(frozen=True)
class SPRTState:
    """Where a :class:`BernoulliSPRT` stands: summed LLR, counts, decision and the log-scale bounds."""

    llr: float
    n: int
    failures: int
    decision: Decision | None
    lower: float  # ln B = ln(beta / (1 - alpha)): accept H0 at or below
    upper: float  # ln A = ln((1 - beta) / alpha): accept H1 at or above


class BernoulliSPRT:
    """Wald's sequential probability ratio test of ``p = p0`` against ``p = p1`` on a failure stream.

    Once a decision is reached it is kept: later updates are ignored, because continuing past a
    boundary voids Wald's error bounds (``P(h1 | H0) <= alpha``, ``P(h0 | H1) <= beta``, approximately).
    ``update(failures, n)`` adds a batch and checks the bounds once, after the batch (a group look).
    """

    def __init__(self, p0: float, p1: float, alpha: float = 0.001, beta: float = 0.01) -> None:
        self.a, self.c = llr_steps(p0, p1)
        self.p0, self.p1, self.alpha, self.beta = p0, p1, alpha, beta
        self.upper = math.log((1.0 - beta) / alpha)
        self.lower = math.log(beta / (1.0 - alpha))
        self._llr, self._n, self._failures = 0.0, 0, 0
        self._decision: Decision | None = None

    @property
    def state(self) -> SPRTState:
        return SPRTState(self._llr, self._n, self._failures, self._decision, self.lower, self.upper)

    def update(self, failures: int, n: int) -> SPRTState:
        if not 0 <= failures <= n:
            raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")
        if self._decision is None:
            self._llr += failures * self.a - (n - failures) * self.c
            self._n += n
            self._failures += failures
            if self._llr >= self.upper:
                self._decision = "h1"
            elif self._llr <= self.lower:
                self._decision = "h0"
        return self.state

    def update_one(self, failed: bool) -> SPRTState:
        return self.update(int(failed), 1)


@dataclass(frozen=True)
class CUSUMState:
    """Where a :class:`BernoulliCUSUM` stands.

    ``change_index`` is the number of observations seen when the statistic last sat at zero: the
    maximum-likelihood estimate of where the current excursion (and so a shift) began.
    """

    statistic: float
    alarm: bool
    n: int
    failures: int
    change_index: int
    threshold: float


class BernoulliCUSUM:
    """Page's one-sided Bernoulli CUSUM: an SPRT for ``p1`` vs ``p0`` that restarts at its lower bound.

    ``S_t = max(0, S_{t-1} + llr_t)``; alarm while ``S_t >= h``. The statistic is not reset on alarm:
    call :meth:`reset` once the alarm is handled. A batch ``update(failures, n)`` is treated as one step
    with the batch's summed LLR; the order within a batch is unknown and this is the order-free choice.
    Lorden (1971): the in-control ARL is at least ``e^h`` steps, so batching only lengthens it in
    observations. Pick ``h`` with :func:`cusum_threshold_for_arl`.
    """

    def __init__(self, p0: float, p1: float, h: float) -> None:
        if h <= 0:
            raise ValueError(f"threshold h must be positive, got {h}")
        self.a, self.c = llr_steps(p0, p1)
        self.p0, self.p1, self.h = p0, p1, h
        self.reset()

    def reset(self) -> None:
        self._s, self._n, self._failures, self._zero_at = 0.0, 0, 0, 0

    @property
    def state(self) -> CUSUMState:
        return CUSUMState(self._s, self._s >= self.h, self._n, self._failures, self._zero_at, self.h)

    def update(self, failures: int, n: int) -> CUSUMState:
        if not 0 <= failures <= n:
            raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")
        self._s = max(0.0, self._s + failures * self.a - (n - failures) * self.c)
        self._n += n
        self._failures += failures
        if self._s == 0.0:
            self._zero_at = self._n
        return self.state

    def update_one(self, failed: bool) -> CUSUMState:
        return self.update(int(failed), 1)


def cusum_paths(
    failed: npt.ArrayLike, p0: float, p1: float, start: npt.ArrayLike = 0.0
) -> npt.NDArray[np.float64]:
    """CUSUM statistic after every observation, vectorised along the last axis.

    Lindley's recursion ``S_t = max(0, S_{t-1} + z_t)`` has the closed form
    ``S_t = W_t - min(0, min_{k<=t} W_k)`` with ``W_t = S_0 + z_1 + ... + z_t``, so a whole block of
    streams is a cumulative sum and a running minimum. ``start`` is ``S_0`` per stream (for chunking).
    """
    a, c = llr_steps(p0, p1)
    z = np.where(np.asarray(failed, dtype=bool), a, -c)
    w = np.cumsum(z, axis=-1) + np.asarray(start, dtype=np.float64)[..., None]
    return w - np.minimum(np.minimum.accumulate(w, axis=-1), 0.0)


def _lattice(a: float, c: float, h: float, max_band_cells: int) -> tuple[int, int, int]:
    """Pick integers ``(u, m, states)`` with ``u/m ~ a/c`` and a banded system small enough to solve.

    The lattice step is ``delta = a/u``: a failure moves exactly ``u`` steps up (so thresholds at
    multiples of ``a``, "alarm on k failures in a row", stay exact) and a pass ``m`` steps down.
    Larger ``m`` approximates ``a/c`` better but grows the band ``(2m+u+1) x states``.
    """
    best: tuple[float, int, int, int] | None = None
    for m in range(1, 65):
        u = max(1, round(a / c * m))
        # A relative tolerance, so that h = k*a counts as reached after k failures despite rounding.
        states = max(1, math.ceil(h * u / a * (1.0 - 1e-12)))
        if m > 1 and (2 * m + min(u, states) + 1) * states > max_band_cells:
            break
        err = abs(u / m - a / c) / (a / c)
        if best is None or err < best[0] - 1e-12:
            best = (err, u, m, states)
        if err < 1e-4:
            break
    assert best is not None
    return best[1], best[2], best[3]


def cusum_arl(
    p0: float, p1: float, h: float, rate: float | None = None, max_band_cells: int = 4_000_000
) -> float:
    """Average run length of :class:`BernoulliCUSUM` from ``S=0`` when the true failure rate is ``rate``.

    ``rate=p0`` (default) gives the in-control ARL0 (mean healthy probes per false alarm); ``rate=p1``
    the mean detection delay from a fresh start (Lorden's worst case).

    Markov-chain method (Brook & Evans 1972, Biometrika 59: 539-549): the LLR steps ``+a``/``-c`` are
    replaced by ``+u``/``-m`` lattice steps of ``delta = a/u`` with ``u/m`` the closest ratio to ``a/c``
    the band budget allows (relative error in ``c`` usually < 0.1 %; the numbers are exact for that
    lattice); states ``0 .. ceil(h/delta)-1`` are transient, the rest absorb. The ARL vector solves
    ``(I - Q) L = 1``, a banded system (lower band ``m``, upper band ``u``) solved with LAPACK gbsv.
    """
    a, c = llr_steps(p0, p1)
    p = p0 if rate is None else rate
    if not 0.0 < p < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {p}")
    if h <= 0:
        raise ValueError(f"threshold h must be positive, got {h}")
    u, m, states = _lattice(a, c, h, max_band_cells)
    upper_band = min(u, states - 1)
    ab = np.zeros((m + upper_band + 1, states))
    idx = np.arange(states)
    ab[upper_band, :] = 1.0  # the diagonal of I - Q
    up = idx + u < states  # a failure from these states stays below the threshold
    if upper_band > 0:
        # ab[upper_band + i - j, j] = A[i, j]; for j = i + u the row is upper_band - u.
        ab[upper_band - u, idx[up] + u] -= p
    down = np.maximum(idx - m, 0)
    ab[upper_band + idx - down, down] -= 1.0 - p
    arl = linalg.solve_banded((m, upper_band), ab, np.ones(states))
    return float(arl[0])


def cusum_threshold_for_arl(p0: float, p1: float, arl0: float, rel_tol: float = 1e-3) -> float:
    """Smallest CUSUM threshold ``h`` whose in-control ARL (via :func:`cusum_arl`) is at least ``arl0``.

    Bisection between 0 and ``ln(arl0)``: Lorden's bound ``ARL0 >= e^h`` makes ``h = ln(arl0)`` always
    sufficient (and conservative when ``KL(p0||p1)`` is small). The ARL is a step function of ``h``
    because the statistic lives on a lattice; the returned ``h`` keeps ``ARL0 >= arl0``. When ``arl0`` is
    at most ``1/p0`` even alarming on the first failure meets it (no alarm can come sooner), so the
    answer is ``h = ln(p1/p0)``, the LLR of one failure.
    """
    a, _ = llr_steps(p0, p1)
    if arl0 <= 1.0 / p0:
        return a
    lo, hi = 0.0, max(math.log(arl0), 1e-6)
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if cusum_arl(p0, p1, mid) >= arl0:
            hi = mid
        else:
            lo = mid
    return hi


def _default_prior_mean(p0: float) -> float:
    return min(0.5 * (1.0 + p0), max(10.0 * p0, p0 + 0.01))


def always_valid_p_value(
    failures: int, n: int, p0: float, prior_mean: float | None = None, prior_strength: float = 10.0
) -> float:
    """Always-valid p-value for ``H0: p <= p0`` against a rate increase, from a beta-mixture martingale.

    The mixture of likelihood ratios over ``p ~ Beta(k*m, k*(1-m))`` truncated to ``(p0, 1)``
    (``m = prior_mean``, ``k = prior_strength``) is

        Lambda_n = B(f+k m, n-f+k(1-m)) * P(Beta(f+k m, n-f+k(1-m)) > p0)
                   / (B(k m, k(1-m)) * P(Beta(k m, k(1-m)) > p0) * p0^f * (1-p0)^(n-f))

    Each component ``prod (p/p0)^x ((1-p)/(1-p0))^(1-x)`` with ``p > p0`` is a martingale at rate p0
    and a supermartingale at any rate below it, so ``Lambda`` is a nonnegative supermartingale for the
    whole composite null; by Ville's inequality ``P(sup_n Lambda_n >= 1/alpha) <= alpha`` (Robbins 1970,
    "Statistical methods related to the law of the iterated logarithm"; Howard et al. 2021, Ann. Stat.).
    Hence ``min(1, 1/Lambda_n)`` is valid at any stopping time, and so is its running minimum, which
    callers holding the path may keep. The default prior centres on ``max(10 p0, p0 + 0.01)``.
    """
    if not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be in (0, 1), got {p0}")
    m = _default_prior_mean(p0) if prior_mean is None else prior_mean
    if not p0 < m < 1.0:
        raise ValueError(f"prior_mean must be in (p0, 1), got {m}")
    # At or below p0 every component likelihood ratio is <= 1 (the likelihood falls beyond its mode).
    if failures <= n * p0:
        return 1.0
    ka, kb = prior_strength * m, prior_strength * (1.0 - m)
    fa, fb = failures + ka, n - failures + kb
    log_lambda = (
        special.betaln(fa, fb)
        + math.log(special.betaincc(fa, fb, p0))
        - special.betaln(ka, kb)
        - math.log(special.betaincc(ka, kb, p0))
        - failures * math.log(p0)
        - (n - failures) * math.log1p(-p0)
    )
    return float(min(1.0, math.exp(-log_lambda)))
