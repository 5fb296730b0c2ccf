"""Anytime-valid companions of the verdict tests: confidence sequences for rates and e-BH.

:func:`rate_difference_cs` bounds ``p_c - p_b`` at every look at once; :func:`e_benjamini_hochberg`
combines the per-metric e-values of :mod:`canary.stats.two_sample` with FDR control under any
dependence.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from scipy import special


def _check(failures: int, n: int) -> None:
    if not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n, got {failures}, {n}")


@functools.lru_cache(maxsize=65536)
def _rate_cs(failures: int, n: int, alpha: float) -> tuple[float, float]:
    """Robbins' Jeffreys-mixture confidence sequence for one rate: ``{p : M_n(p) < 1/alpha}``.

    ``M_n(p) = B(f + 1/2, n - f + 1/2) / (B(1/2, 1/2) p^f (1-p)^(n-f))`` is a nonnegative martingale
    at the true rate, so by Ville's inequality the set covers it at every ``n`` at once with
    probability ``1 - alpha``. The log-likelihood is concave, so the set is an interval around
    ``f/n``; its ends are found by bisection.
    """
    if n == 0:
        return 0.0, 1.0
    level = float(special.betaln(failures + 0.5, n - failures + 0.5) - special.betaln(0.5, 0.5))
    level -= math.log(1.0 / alpha)  # keep p while l(p) > log mixture - log(1/alpha)

    def kept(p: float) -> bool:
        loglik = (failures * math.log(p) if failures else 0.0) + (
            (n - failures) * math.log1p(-p) if n > failures else 0.0
        )
        return loglik > level

    p_hat, bounds = failures / n, []
    for far in (0.0, 1.0):
        if (far == 0.0 and failures == 0) or (far == 1.0 and failures == n):
            bounds.append(far)  # the likelihood peaks at this end
            continue
        inner, outer = p_hat, far
        for _ in range(50):
            mid = 0.5 * (inner + outer)
            inner, outer = (mid, outer) if kept(mid) else (inner, mid)
        bounds.append(outer)
    return bounds[0], bounds[1]


def rate_difference_cs(
    canary_f: int, canary_n: int, base_f: int, base_n: int, alpha: float = 0.05
) -> tuple[float, float]:
    """An anytime-valid confidence sequence for ``p_c - p_b``: one per side at ``alpha/2``, differenced.

    Covers the true difference at every look at once with probability at least ``1 - alpha``.
    """
    _check(canary_f, canary_n)
    _check(base_f, base_n)
    lc, uc = _rate_cs(canary_f, canary_n, alpha / 2.0)
    lb, ub = _rate_cs(base_f, base_n, alpha / 2.0)
    return max(-1.0, lc - ub), min(1.0, uc - lb)


def e_benjamini_hochberg(e_values: npt.ArrayLike, alpha: float = 0.05) -> npt.NDArray[np.bool_]:
    """e-BH (Wang & Ramdas 2022, JRSS B 84: 822-852): reject the ``k`` largest e-values, ``k`` the
    largest with ``e_(k) >= m / (alpha k)``. Controls the FDR at ``alpha`` under any dependence, and
    at a stopping time when the inputs are e-processes; a lone rejection needs ``e >= m/alpha``.
    Returns a boolean mask in the input's order.
    """
    e = np.asarray(e_values, dtype=np.float64).ravel()
    if e.size == 0:
        return np.zeros(0, dtype=bool)
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("e-values must be nonnegative")
    m = e.size
    if m == 1:
        return np.array([e[0] * alpha >= 1.0])
    order = np.argsort(-e, kind="stable")
    passed = e[order] * alpha * np.arange(1, m + 1) / m >= 1.0
    reject = np.zeros(m, dtype=bool)
    if passed.any():
        reject[order[: int(np.nonzero(passed)[0][-1]) + 1]] = True
    return reject
