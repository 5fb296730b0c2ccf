"""Anytime-valid comparison of medians (latency): is the canary's above ``ratio`` x the baseline's?

Built from one-sample sign tests, each an e-process over the exceedances of a fixed level ``t``:

- ``E_a(t)``: evidence that ``median(a) > t``. Under ``median(a) <= t`` the indicator ``1[X > t]``
  has rate at most 1/2, and the uniform mixture over rates in (1/2, 1) of the likelihood ratio
  against 1/2, ``2^(n+1) * integral_{1/2}^{1} q^k (1-q)^(n-k) dq`` for ``k`` exceedances in ``n``, is a
  nonnegative supermartingale with mean at most 1 (each component ``(2q)^x (2(1-q))^(1-x)``
  has mean ``1 + (2r-1)(2q-1) <= 1`` at a rate ``r <= 1/2``).
- ``E_b(t)``: evidence that ``median(b) < t``, the same on ``1[Y < t]``.

:func:`log_e_median_greater` is ``1/2 sup_t min(E_a(t), E_b(t))``, evidence that
``median(a) > median(b)``. Valid because, under ``median(a) <= median(b)``, every ``t`` is either at
least ``median(a)``, where ``E_a(t) <= E_a(median(a))`` (fewer exceedances), or below
``median(b)``, where ``E_b(t) <= E_b(median(b))``; so the statistic is at most the mean of two
test supermartingales at fixed true-null levels, and Ville's inequality applies to it. Only the
ranks of the values enter, so it is distribution-free; it assumes the values of each side are
independent draws (a growing sample: callers must not slide a window over them).

The verdict compares ``a`` = canary latencies with ``b`` = ``(1 + shift)`` x baseline latencies
(harm), and the other way round (no harm). :func:`median_cs` is the matching confidence sequence
for one median (the order statistics where a one-sided test reaches ``1/alpha``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]


def log_e_above_half(k: npt.ArrayLike, n: int) -> FloatArray:
    """Log of the uniform-mixture e-value against ``rate <= 1/2`` for ``k`` successes in ``n`` trials.

    ``ln(2^(n+1) B(k+1, n-k+1) P(Beta(k+1, n-k+1) > 1/2))``; 0 trials give 0 (``E = 1``).
    """
    kk = np.asarray(k, dtype=np.float64)
    if n == 0:
        return np.zeros_like(kk)
    with np.errstate(divide="ignore"):
        tail = np.log(special.betaincc(kk + 1.0, n - kk + 1.0, 0.5))
    return np.asarray(
        (n + 1) * math.log(2.0) + special.betaln(kk + 1.0, n - kk + 1.0) + tail, dtype=np.float64
    )


@functools.lru_cache(maxsize=256)
def _table(n: int) -> FloatArray:
    """``log_e_above_half(k, n)`` for every ``k`` in ``0..n`` (read-only)."""
    table = log_e_above_half(np.arange(n + 1), n)
    table.setflags(write=False)
    return table


def log_e_median_greater(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Log e-value for ``median(a) > median(b)`` (module docstring); 0 (``E = 1``) when a side is empty."""
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if x.size == 0 or y.size == 0:
        return 0.0
    # On each gap (t_i, t_i+1) between the pooled values the counts are constant: #{x > t} counts
    # the x above t_i, #{y < t} the y at or below t_i.
    cuts = np.unique(np.concatenate([x, y]))
    above = x.size - np.searchsorted(x, cuts, side="right")
    below = np.searchsorted(y, cuts, side="right")
    both = np.minimum(_table(x.size)[above], _table(y.size)[below])
    return float(math.log(0.5) + np.max(both))


def median_cs(values: npt.ArrayLike, alpha: float) -> tuple[float, float]:
    """Anytime-valid confidence sequence for the median: ``(x_(n-k+1), x_(k))`` in sorted order, with
    ``k`` the fewest exceedances whose e-value reaches ``1/alpha``; ``(-inf, inf)`` while none does."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    k = _fewest_exceedances(x.size, alpha)
    if k is None:
        return -math.inf, math.inf
    return float(x[x.size - k]), float(x[k - 1])


@functools.lru_cache(maxsize=4096)
def _fewest_exceedances(n: int, alpha: float) -> int | None:
    """The fewest of ``n`` values above a level whose e-value reaches ``1/alpha`` (None: no count does)."""
    if n == 0:
        return None
    reached = np.nonzero(_table(n) >= math.log(1.0 / alpha))[0]
    return int(reached[0]) if reached.size else None


def median_ratio_cs(canary: npt.ArrayLike, baseline: npt.ArrayLike, alpha: float) -> tuple[float, float]:
    """Anytime-valid bounds on ``median(canary) / median(baseline) - 1`` for positive values (each
    median's sequence at ``alpha/2``); infinite while a bound is not yet determined."""
    lc, uc = median_cs(canary, alpha / 2.0)
    lb, ub = median_cs(baseline, alpha / 2.0)
    low = lc / ub - 1.0 if lc > 0 and math.isfinite(ub) else -1.0
    high = uc / lb - 1.0 if lb > 0 and math.isfinite(uc) else math.inf
    return low, high
