"""Anytime-valid comparison of a canary's failure rate with a baseline's: an e-value that may be watched.

The question of a deploy verdict, for one rate metric: does the canary fail more often than the
baseline by more than a tolerated ``margin``? ``H0: p_c <= p_b + margin`` against ``p_c > p_b + margin``.
The verdict looks at the counts every 30 s, so a fixed-sample p-value (Fisher, Boschloo) would be
tested dozens of times; this module gives an e-value ``E`` whose running value may be watched:
``P(E_n >= 1/alpha for some n) <= alpha`` under every null point, however often and whenever one looks.

The e-value is *universal inference* (Wasserman, Ramdas & Balakrishnan 2020, "Universal inference",
PNAS 117: 16880-16890) with a mixture in the numerator::

    E_n = sum_j w_j L_c(theta_cj) L_b(theta_bj)  /  sup_{p_c <= p_b + margin} L_c(p_c) L_b(p_b)

``L_c(p) = p^f_c (1-p)^(n_c-f_c)`` is the canary's likelihood, ``L_b`` the baseline's. The mixture runs
over alternatives ``theta_b`` on a Jeffreys grid (``sin^2`` of evenly spaced angles, equal weights:
the Beta(1/2, 1/2) prior discretised) and ``theta_c = theta_b + d`` for the stated ``effect`` ``d``
(half of the weight) and, sharing the other half, ``d/4``, ``d/2`` (so a real but smaller
increase is still caught given enough runs) and the doublings ``2d, 4d, ...`` below 1 (so a gross
fault is caught fast). Why it is valid: at the true null point ``p*`` the denominator is at least
``L(p*)``, so ``E_n <= sum_j w_j L(theta_j) / L(p*)``, a mixture of likelihood ratios, which is a
nonnegative martingale with mean 1 under ``p*`` whichever side each run comes from; Ville's
inequality bounds its supremum. ``E`` depends on the counts only, so a verdict recomputed from the
database at each look is the same process. The price of validity under optional stopping is sample
size: two to three and a half times the runs one look of a Fisher test needs at the same alpha and
power (+10 pts at power 0.8, alpha 0.05: 124 vs 66 runs a side at a 0 % baseline, 838 vs 249 at 20 %).
(Turner, Ly & Grunwald's exact 2x2 e-values are more powerful but need the runs in fixed blocks
of both sides, which counts re-read at arbitrary looks do not give.)

Power is computed exactly: for each baseline count the smallest canary count that rejects is found
by bisection, and the probability of that region is summed (:func:`rate_power`, :func:`rate_mde`,
:func:`rate_sample_size`). Only the last look is counted, so the power of a watched test, which may
reject at an earlier look, is at least this.

Its companions, an anytime-valid confidence sequence for ``p_c - p_b`` and e-BH across metrics,
are in :mod:`canary.stats.anytime`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from canary.stats.rates import rate_ci

FloatArray = npt.NDArray[np.float64]

GRID_POINTS = 256  # baseline rates in the mixture
_ANGLES = (np.arange(GRID_POINTS) + 0.5) * (0.5 * np.pi / GRID_POINTS)
JEFFREYS_GRID: FloatArray = np.sin(_ANGLES) ** 2  # equal Beta(1/2, 1/2) mass around each point
HEAD_WEIGHT = 0.5  # the mixture's weight on the stated effect itself
CHUNK = 64  # baseline counts per cached block of critical counts


@dataclass(frozen=True)
class RateEvidence:
    """The e-value against ``H0: p_c <= p_b + margin`` and the numbers behind it."""

    log_e: float
    canary_rate: float
    baseline_rate: float

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 690.0))  # e^690 ~ 1e300: beyond any threshold, still finite

    @property
    def p_value(self) -> float:
        """``min(1, 1/E)``: an anytime-valid p-value."""
        return math.exp(-max(self.log_e, 0.0))


@dataclass(frozen=True)
class _Alternative:
    """The mixture's components, one entry per (baseline rate, effect): log weights and log odds.

    A component's log-likelihood is ``log_w + f_c logit_c + n_c log1m_c + f_b logit_b + n_b log1m_b``.
    """

    log_w: FloatArray
    logit_c: FloatArray
    log1m_c: FloatArray
    logit_b: FloatArray
    log1m_b: FloatArray


def effect_grid(effect: float, margin: float = 0.0) -> tuple[float, ...]:
    """The alternatives' rate increases: ``effect`` first, then its halvings down to ``effect/4`` that
    exceed ``margin`` and its doublings below 1."""
    _check_design(margin, effect)
    smaller = [effect / 2.0**k for k in (2, 1) if effect / 2.0**k > margin]
    larger = [effect * 2.0**k for k in range(1, 8) if effect * 2.0**k < 1.0]
    return (effect, *smaller, *larger)


@functools.lru_cache(maxsize=32)
def _alternative(effect: float, margin: float) -> _Alternative:
    effects = effect_grid(effect, margin)
    rest = len(effects) - 1
    weights = [1.0] if rest == 0 else [HEAD_WEIGHT] + [(1.0 - HEAD_WEIGHT) / rest] * rest
    parts: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    for d, w in zip(effects, weights, strict=True):
        base = JEFFREYS_GRID[JEFFREYS_GRID + d < 1.0]
        parts.append((base, base + d, np.full(base.size, math.log(w / base.size))))
    base = np.concatenate([p[0] for p in parts])
    canary = np.concatenate([p[1] for p in parts])
    return _Alternative(
        log_w=np.concatenate([p[2] for p in parts]),
        logit_c=np.log(canary) - np.log1p(-canary),
        log1m_c=np.log1p(-canary),
        logit_b=np.log(base) - np.log1p(-base),
        log1m_b=np.log1p(-base),
    )


def _loglik(x: FloatArray, n: float, p: FloatArray) -> FloatArray:
    return np.asarray(special.xlogy(x, p) + special.xlog1py(n - x, -p), dtype=np.float64)


def _log_mixture(
    xc: FloatArray, nc: int, xb: FloatArray, nb: int, margin: float, effect: float
) -> FloatArray:
    alt = _alternative(effect, margin)
    offset = alt.log_w + nc * alt.log1m_c + nb * alt.log1m_b
    terms = offset + np.multiply.outer(xc, alt.logit_c) + np.multiply.outer(xb, alt.logit_b)
    top = terms.max(axis=-1)
    return np.asarray(top + np.log(np.exp(terms - top[..., None]).sum(axis=-1)), dtype=np.float64)


def _log_null_sup(xc: FloatArray, nc: int, xb: FloatArray, nb: int, margin: float) -> FloatArray:
    """``sup`` of the log-likelihood over ``p_c <= p_b + margin`` (concave, so one root on the boundary)."""
    pc, pb = xc / nc, xb / nb
    inside = pc <= pb + margin
    free = _loglik(xc, nc, pc) + _loglik(xb, nb, pb)
    if margin == 0.0:
        pooled = (xc + xb) / (nc + nb)
        edge = _loglik(xc, nc, pooled) + _loglik(xb, nb, pooled)
        return np.where(inside, free, edge)
    # On the boundary p_c = p + margin: bisect the derivative of l_c(p + margin) + l_b(p) on [0, 1-margin].
    lo, hi = np.zeros_like(pc), np.full_like(pc, 1.0 - margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(60):
            p = 0.5 * (lo + hi)
            slope = (
                xc / (p + margin) - (nc - xc) / (1.0 - p - margin) + np.where(xb > 0, xb / p, 0.0)
            ) - np.where(nb > xb, (nb - xb) / (1.0 - p), 0.0)
            lo, hi = np.where(slope > 0, p, lo), np.where(slope > 0, hi, p)
    p = 0.5 * (lo + hi)
    edge = np.maximum.reduce(
        [
            _loglik(xc, nc, q + margin) + _loglik(xb, nb, q)
            for q in (p, np.zeros_like(p), np.full_like(p, 1.0 - margin))
        ]
    )
    return np.where(inside, free, edge)


def _log_e(xc: FloatArray, nc: int, xb: FloatArray, nb: int, margin: float, effect: float) -> FloatArray:
    return _log_mixture(xc, nc, xb, nb, margin, effect) - _log_null_sup(xc, nc, xb, nb, margin)


def _check(failures: int, n: int) -> None:
    if not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")


def _check_design(margin: float, effect: float) -> None:
    if not 0.0 <= margin < effect < 1.0:
        raise ValueError(f"need 0 <= margin < effect < 1, got margin={margin}, effect={effect}")


def rate_evidence(
    canary_f: int, canary_n: int, base_f: int, base_n: int, *, margin: float = 0.0, effect: float = 0.1
) -> RateEvidence:
    """The e-value against ``H0: p_c <= p_b + margin`` from the counts so far (module docstring).

    ``effect`` is the rate increase the mixture is built around (the one the test must detect).
    With no run on a side there is no evidence: ``E = 1``.
    """
    _check(canary_f, canary_n)
    _check(base_f, base_n)
    _check_design(margin, effect)
    rate = canary_f / canary_n if canary_n else math.nan
    base = base_f / base_n if base_n else math.nan
    if canary_n == 0 or base_n == 0:
        return RateEvidence(0.0, rate, base)
    xc, xb = np.array([float(canary_f)]), np.array([float(base_f)])
    return RateEvidence(float(_log_e(xc, canary_n, xb, base_n, margin, effect)[0]), rate, base)


@functools.lru_cache(maxsize=4096)
def _critical_chunk(
    nc: int, nb: int, chunk: int, log_threshold: float, margin: float, effect: float
) -> tuple[int, ...]:
    """For baseline counts ``chunk*CHUNK ..``: the smallest canary count whose e-value reaches the threshold.

    ``nc + 1`` where none does. Bisection relies on the e-value rising with the canary's count at a
    fixed baseline count (checked exhaustively on small tables in the tests).
    """
    if log_threshold <= 0.0:
        raise ValueError("the threshold must exceed 1")
    xb = np.arange(chunk * CHUNK, min(nb, chunk * CHUNK + CHUNK - 1) + 1, dtype=np.float64)
    # e(lo) < threshold <= e(hi), with nc + 1 standing for "never". Up to p_c = p_b + margin the
    # unconstrained maximum is a null point, so E <= 1 there: the search starts above it.
    lo = np.minimum(np.floor(nc * (xb / nb + margin)).astype(np.int64), nc)
    hi = np.full(xb.shape, nc + 1)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        active = hi - lo > 1
        reached = _log_e(np.clip(mid, 0, nc).astype(np.float64), nc, xb, nb, margin, effect) >= log_threshold
        hi = np.where(active & reached, mid, hi)
        lo = np.where(active & ~reached, mid, lo)
    return tuple(int(v) for v in hi)


def _critical_counts(
    nc: int, nb: int, first: int, last: int, log_threshold: float, margin: float, effect: float
) -> npt.NDArray[np.int64]:
    chunks = range(first // CHUNK, last // CHUNK + 1)
    crit = np.concatenate([_critical_chunk(nc, nb, c, log_threshold, margin, effect) for c in chunks])
    offset = (first // CHUNK) * CHUNK
    return np.asarray(crit[first - offset : last - offset + 1], dtype=np.int64)


def _binom_pmf(k: FloatArray, n: int, p: float) -> FloatArray:
    log_choose = special.gammaln(n + 1.0) - special.gammaln(k + 1.0) - special.gammaln(n - k + 1.0)
    return np.asarray(np.exp(log_choose + _loglik(k, n, np.full_like(k, p))), dtype=np.float64)


def _at_least(k: npt.NDArray[np.int64], n: int, p: float) -> FloatArray:
    """``P(X >= k)`` for ``X ~ Bin(n, p)``: the regularised incomplete beta ``I_p(k, n-k+1)``."""
    kk = np.clip(k, 1, n).astype(np.float64)
    inner = special.betainc(kk, n - kk + 1.0, p) if p > 0 else np.zeros_like(kk)
    return np.asarray(np.where(k <= 0, 1.0, np.where(k > n, 0.0, inner)), dtype=np.float64)


def _baseline_span(nb: int, pb: float) -> tuple[int, int]:
    """Baseline counts holding all but ~1e-10 of ``Bin(nb, pb)``."""
    if pb <= 0.0:
        return 0, 0
    sd = math.sqrt(nb * pb * (1.0 - pb))
    return max(0, math.floor(nb * pb - 7.0 * sd - 2)), min(nb, math.ceil(nb * pb + 7.0 * sd + 2))


@dataclass(frozen=True)
class _Region:
    weights: FloatArray  # P(baseline count) under the planning rate
    critical: npt.NDArray[np.int64]


def _region(nc: int, nb: int, pb: float, threshold: float, margin: float, effect: float) -> _Region:
    first, last = _baseline_span(nb, pb)
    crit = _critical_counts(nc, nb, first, last, math.log(threshold), margin, effect)
    weights = _binom_pmf(np.arange(first, last + 1, dtype=np.float64), nb, pb)
    return _Region(weights, crit)


def rate_power(
    canary_n: int,
    base_n: int,
    canary_rate: float,
    base_rate: float,
    threshold: float,
    *,
    margin: float = 0.0,
    effect: float = 0.1,
) -> float:
    """``P(E >= threshold)`` after ``canary_n`` and ``base_n`` runs at the given true rates (exact)."""
    _check_design(margin, effect)
    if canary_n < 1 or base_n < 1:
        return 0.0
    region = _region(canary_n, base_n, base_rate, threshold, margin, effect)
    return float(np.sum(region.weights * _at_least(region.critical, canary_n, canary_rate)))


@functools.lru_cache(maxsize=65536)
def rate_mde(
    canary_n: int,
    base_n: int,
    base_rate: float,
    threshold: float,
    power: float,
    *,
    margin: float = 0.0,
    effect: float = 0.1,
) -> float:
    """Smallest rate increase over ``base_rate`` that the e-value detects with probability ``power``.

    Detection means ``E >= threshold`` at these sample sizes (the last look alone; see the module
    docstring). Found by bisection on the exact power, to 5e-4. ``inf`` when even a canary failing
    every run would not be detected often enough.
    """
    _check_design(margin, effect)
    if canary_n < 1 or base_n < 1:
        return math.inf
    region = _region(canary_n, base_n, base_rate, threshold, margin, effect)

    def detected(increase: float) -> float:
        return float(np.sum(region.weights * _at_least(region.critical, canary_n, base_rate + increase)))

    lo, hi = margin, 1.0 - base_rate
    if detected(hi) < power:
        return math.inf
    while hi - lo > 5e-4:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if detected(mid) >= power else (mid, hi)
    return hi


def rate_sample_size(
    base_rate: float,
    increase: float,
    threshold: float,
    power: float,
    *,
    margin: float = 0.0,
    effect: float = 0.1,
    ratio: float = 1.0,
    max_n: int = 1_000_000,
) -> int:
    """Canary runs (the baseline has ``ratio`` times as many) for ``rate_power >= power`` at ``increase``.

    Doubling, then bisection on the exact power; the power of a discrete test is not exactly
    monotone in ``n``, so this is the first ``n`` the bisection finds, within one run of the
    smallest. Raises ``ValueError`` when even ``max_n`` runs fall short.
    """

    def enough(n: int) -> bool:
        nb = max(1, math.ceil(ratio * n))
        return (
            rate_power(n, nb, base_rate + increase, base_rate, threshold, margin=margin, effect=effect)
            >= power
        )

    return smallest_sufficient(enough, max_n, "runs")


def smallest_sufficient(enough: Callable[[int], bool], max_n: int, unit: str) -> int:
    """The first ``n`` with ``enough(n)`` found by doubling from 8, then bisection (for a power that
    rises with ``n`` up to discreteness). Raises ``ValueError`` when even ``max_n`` falls short."""
    hi = 8
    while not enough(hi):
        if hi >= max_n:
            raise ValueError(f"more than {max_n} {unit} needed")
        hi = min(2 * hi, max_n)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


@functools.lru_cache(maxsize=65536)
def planning_rate(base_f: int, base_n: int, effect: float, confidence: float) -> float:
    """The baseline rate to size a test at: the hardest one the baseline's data leave plausible.

    Power at a fixed increase falls as the rates approach 1/2 (the variance grows), so this is
    ``(1 - effect)/2`` clipped to the Wilson bounds with one-sided ``confidence`` each: a clean
    0/30 baseline is planned at 2.3 % (at 0.8), not at 0.
    """
    _check(base_f, base_n)
    lo, hi = rate_ci(base_f, base_n, confidence=2.0 * confidence - 1.0) if base_n else (0.0, 1.0)
    return float(min(max(0.5 * (1.0 - effect), lo), hi))
