"""Canary-vs-baseline comparison of continuous values (latency, similarity scores) for deploy verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

# Hodges-Lehmann needs all n*m pairwise differences; above this many, each sample is replaced by
# evenly spaced quantiles (deterministic, so verdicts are reproducible) to bound memory at ~32 MB.
MAX_PAIRS = 4_000_000


@dataclass(frozen=True)
class ContinuousComparison:
    """Mann-Whitney U test with the Hodges-Lehmann shift (canary minus baseline) and its CI."""

    p_value: float
    statistic: float  # U of the canary sample
    shift: float
    ci_low: float
    ci_high: float
    n_canary: int
    n_base: int


def _thin(x: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    return x if x.size <= size else np.quantile(x, (np.arange(size) + 0.5) / size)


def compare_continuous(
    canary_values: npt.ArrayLike,
    base_values: npt.ArrayLike,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
    confidence: float = 0.95,
) -> ContinuousComparison:
    """Mann-Whitney U test of canary vs baseline values, with a Hodges-Lehmann shift estimate.

    The p-value is ``scipy.stats.mannwhitneyu`` (exact for small samples without ties, tie-corrected
    normal approximation otherwise). The shift is the median of all pairwise differences
    ``canary_i - base_j`` (Hodges & Lehmann 1963); its distribution-free CI takes the order statistics
    ``D_(k)`` and ``D_(nm-k+1)`` with ``k = nm/2 - z sqrt(nm(n+m+1)/12)`` (Lehmann 1975, normal
    approximation to the U null distribution).
    """
    x = np.asarray(canary_values, dtype=np.float64).ravel()
    y = np.asarray(base_values, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    res = stats.mannwhitneyu(x, y, alternative=alternative)
    n, m = x.size, y.size
    if n * m > MAX_PAIRS:
        side = int(np.sqrt(MAX_PAIRS))
        xs, ys = _thin(x, side), _thin(y, side)
    else:
        xs, ys = x, y
    diffs = np.sort(np.subtract.outer(xs, ys).ravel())
    nm = diffs.size
    z = float(stats.norm.isf((1.0 - confidence) / 2.0))
    k = int(np.floor(nm / 2.0 - z * np.sqrt(nm * (xs.size + ys.size + 1) / 12.0)))
    k = min(max(k, 1), nm)
    return ContinuousComparison(
        p_value=float(res.pvalue),
        statistic=float(res.statistic),
        shift=float(np.median(diffs)),
        ci_low=float(diffs[k - 1]),
        ci_high=float(diffs[nm - k]),
        n_canary=n,
        n_base=m,
    )
