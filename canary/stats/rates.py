"""Failure-rate findings: confidence intervals, exact comparisons, peer tests and sample sizes.

Intervals follow Newcombe (1998): Wilson's score interval for one proportion ("Two-sided confidence
intervals for the single proportion", Stat. Med. 17: 857-872) and the hybrid score interval (method 10)
for a difference ("Interval estimation for the difference between independent proportions",
Stat. Med. 17: 873-890). Comparisons are exact tests from scipy (Boschloo, else Fisher).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

Alternative = Literal["greater", "less", "two-sided"]

# Boschloo's test maximises over a nuisance parameter and costs ~0.3 s at 200+200 runs but ~16 s at
# 1000+1000 (scipy 1.17, one core); beyond this many runs in total, Fisher's test is used instead.
BOSCHLOO_MAX_RUNS = 400


def _check_counts(failures: int, n: int) -> None:
    if not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")


def rate_ci(failures: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a failure rate.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the two-sided normal
    quantile. Unlike the Wald interval it stays inside [0, 1] and is not degenerate at 0 failures,
    which is the usual case for a healthy canary. ``n = 0`` gives ``(0, 1)``.
    """
    _check_counts(failures, n)
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.isf((1.0 - confidence) / 2.0))
    p = failures / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    denom = 1.0 + z * z / n
    # Clamp: at 0 or n failures the bound is exactly 0 or 1, up to rounding.
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


def rate_upper_bounds(
    failures: npt.ArrayLike, n: npt.ArrayLike, confidence: float = 0.95
) -> npt.NDArray[np.float64]:
    """Upper ends of :func:`rate_ci` (Wilson, two-sided ``confidence``) for arrays of counts.

    ``n = 0`` gives 1, as the scalar version does.
    """
    f = np.asarray(failures, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    z = float(stats.norm.isf((1.0 - confidence) / 2.0))
    safe = np.maximum(nn, 1.0)
    p = np.clip(f / safe, 0.0, 1.0)
    centre = p + z * z / (2 * safe)
    half = z * np.sqrt(p * (1.0 - p) / safe + z * z / (4 * safe * safe))
    upper = np.minimum(1.0, (centre + half) / (1.0 + z * z / safe))
    return np.where(nn > 0, upper, 1.0)


def rate_difference_ci(f1: int, n1: int, f0: int, n0: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``f1/n1 - f0/n0`` (method 10 of Newcombe 1998).

    With Wilson limits ``(l1, u1)`` and ``(l0, u0)`` and ``d = p1 - p0``:
    ``(d - sqrt((p1-l1)^2 + (u0-p0)^2),  d + sqrt((u1-p1)^2 + (p0-l0)^2))``.
    """
    _check_counts(f1, n1)
    _check_counts(f0, n0)
    if n1 == 0 or n0 == 0:
        return -1.0, 1.0
    p1, p0 = f1 / n1, f0 / n0
    l1, u1 = rate_ci(f1, n1, confidence)
    l0, u0 = rate_ci(f0, n0, confidence)
    d = p1 - p0
    return (
        max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)),
        min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)),
    )


@dataclass(frozen=True)
class RateComparison:
    """An exact comparison of two failure rates: p-value, effect (difference of rates) and its CI."""

    p_value: float
    effect: float  # rate - baseline_rate
    ci_low: float
    ci_high: float
    rate: float
    baseline_rate: float
    method: str


def compare_rates(
    canary_f: int,
    canary_n: int,
    base_f: int,
    base_n: int,
    alternative: Alternative = "greater",
    method: Literal["auto", "boschloo", "fisher"] = "auto",
    confidence: float = 0.95,
) -> RateComparison:
    """Exact test of the canary's failure rate against the baseline's (per-deploy verdicts, issue 5).

    ``alternative="greater"`` asks whether the canary fails more often. Boschloo's test (uniformly more
    powerful than Fisher's; Boschloo 1970, Statistica Neerlandica 24: 1-9) is used up to
    ``BOSCHLOO_MAX_RUNS`` runs in total under ``method="auto"``, Fisher's exact test beyond. The table
    is ``[[canary_f, base_f], [canary_n - canary_f, base_n - base_f]]``. The CI is Newcombe's interval
    for the difference at ``confidence`` (two-sided). With an empty arm the p-value is 1.
    """
    _check_counts(canary_f, canary_n)
    _check_counts(base_f, base_n)
    if canary_n == 0 or base_n == 0:
        rate = canary_f / canary_n if canary_n else math.nan
        base = base_f / base_n if base_n else math.nan
        return RateComparison(1.0, rate - base, -1.0, 1.0, rate, base, "none")
    if method == "auto":
        method = "boschloo" if canary_n + base_n <= BOSCHLOO_MAX_RUNS else "fisher"
    table = [[canary_f, base_f], [canary_n - canary_f, base_n - base_f]]
    if method == "boschloo":
        p = float(stats.boschloo_exact(table, alternative=alternative).pvalue)
    else:
        p = float(stats.fisher_exact(table, alternative=alternative).pvalue)
    rate, base = canary_f / canary_n, base_f / base_n
    low, high = rate_difference_ci(canary_f, canary_n, base_f, base_n, confidence)
    return RateComparison(min(1.0, p), rate - base, low, high, rate, base, method)


def peer_test(
    cell_failures: int,
    cell_n: int,
    peer_failures: int | Sequence[int],
    peer_n: int | Sequence[int],
    confidence: float = 0.95,
) -> RateComparison:
    """One-sided test that a cell fails more often than its pooled peers (same model and probe elsewhere).

    Peers' counts are pooled (the "equivalence across platforms" standard: one reference rate), then
    Fisher's exact test, alternative "greater", conditions on the total number of failures, so the
    peers' rate is estimated, not assumed. Effect = cell rate - pooled peer rate, with Newcombe's CI.
    """
    pf = peer_failures if isinstance(peer_failures, int) else int(sum(peer_failures))
    pn = peer_n if isinstance(peer_n, int) else int(sum(peer_n))
    return compare_rates(cell_failures, cell_n, pf, pn, "greater", "fisher", confidence)


def minimum_detectable_effect(p0: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest rate increase over ``p0`` that an exact one-sided binomial test on ``n`` runs detects.

    1. The critical count ``k`` is the smallest with ``P(X >= k | p0) <= alpha``, ``X ~ Bin(n, p0)``.
    2. ``P(X >= k | p) = I_p(k, n-k+1)`` (regularised incomplete beta), so the rate detected with
       probability ``power`` is the ``power`` quantile of ``Beta(k, n-k+1)``.
    Returns that rate minus ``p0``; ``inf`` when even ``n`` failures out of ``n`` would not be significant.
    """
    if not 0.0 <= p0 < 1.0 or n < 1:
        raise ValueError(f"need 0 <= p0 < 1 and n >= 1, got {p0}, {n}")
    k = int(stats.binom.isf(alpha, n, p0)) + 1  # smallest k with P(X > k-1) <= alpha
    if k > n:
        return math.inf
    return float(stats.beta.ppf(power, k, n - k + 1)) - p0


def minimum_sample_size(p0: float, p1: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Runs per arm for a one-sided two-sample comparison of rates ``p0`` (baseline) vs ``p1`` (canary).

    Normal approximation without continuity correction (Fleiss, Levin & Paik 2003, eq. 4.14):
    ``n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p0 q0 + p1 q1))^2 / (p1 - p0)^2`` with ``pbar`` the mean
    rate; e.g. 0.1 vs 0.2 at one-sided alpha 0.025 and power 0.8 needs 199 per arm.
    """
    if not 0.0 <= p0 < p1 <= 1.0:
        raise ValueError(f"need 0 <= p0 < p1 <= 1, got {p0}, {p1}")
    za, zb = float(stats.norm.isf(alpha)), float(stats.norm.isf(1.0 - power))
    pbar = 0.5 * (p0 + p1)
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return math.ceil(root * root / (p1 - p0) ** 2 - 1e-9)


def sample_size_sufficient(
    canary_n: int, base_n: int, p0: float, p1: float, alpha: float = 0.05, power: float = 0.8
) -> bool:
    """Whether both arms reached :func:`minimum_sample_size`; if not, a verdict should be INCONCLUSIVE."""
    need = minimum_sample_size(p0, p1, alpha, power)
    return canary_n >= need and base_n >= need


@dataclass(frozen=True)
class CMHResult:
    """One-sided Cochran-Mantel-Haenszel test: does the first group fail more often, stratum by stratum?"""

    z: float
    p_value: float


def cmh_test(
    failures1: npt.ArrayLike,
    n1: npt.ArrayLike,
    failures2: npt.ArrayLike,
    n2: npt.ArrayLike,
    correction: bool = True,
) -> CMHResult:
    """Mantel-Haenszel statistic over 2x2 tables, one per stratum, one-sided ("greater").

    ``z = (sum a - sum E[a] - 1/2) / sqrt(sum Var[a])`` with the hypergeometric mean and variance of
    each stratum's first-group failures ``a`` given its margins (Mantel & Haenszel 1959, with the
    continuity correction). Strata with a constant outcome carry no information (variance 0).
    Without the correction and with one stratum, ``z^2`` is Pearson's chi-square times ``(N-1)/N``.
    """
    a, m, b, k = (np.asarray(x, dtype=np.float64) for x in (failures1, n1, failures2, n2))
    total = m + k
    fails = a + b
    ok = total > 1
    mean = np.where(ok, m * fails / np.where(ok, total, 1.0), a)
    var = np.where(ok, m * k * fails * (total - fails) / np.where(ok, total**2 * (total - 1), 1.0), 0.0)
    v = float(var.sum())
    if v <= 0:
        return CMHResult(0.0, 1.0)
    z = (float((a - mean).sum()) - (0.5 if correction else 0.0)) / math.sqrt(v)
    return CMHResult(z, float(stats.norm.sf(z)))
