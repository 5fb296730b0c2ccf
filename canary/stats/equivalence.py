"""Is a cell the same model as its peers? Teacher-forced log-likelihoods compared token by token.

Where a server returns prompt log-probabilities, a fixed continuation of a fixed prompt is
scored in one forward pass, with no sampling noise: every cell scores the *same tokens*, so the
comparison is paired and the (large) variation from token to token and prompt to prompt cancels.

:func:`forced_comparison` takes the cell's per-token log-probabilities ``x`` and its peers'
``X`` (one row per peer, same tokens) and asks whether the cell sits farther from its peers
than healthy implementations do:

1. The peer consensus of each token is the median of the peers' values (one broken peer does
   not move it), and the cell's deviation ``a_t = |x_t - median_p X_pt|``.
2. Healthy implementations are not identical (bf16 against fp32, kernels that are not
   batch-invariant), so the tolerance is ``max(floor, factor * spread)``, where ``spread`` is the
   median, over peers, of each peer's own mean deviation from the other peers' median.
3. A one-sided t-test of ``H0: E[a_t] <= tolerance``; the effect is ``mean(a_t)`` (nats per
   token) with a ``1 - 2 alpha`` confidence interval, and the verdict a two one-sided tests
   reading: ``different`` when the null is rejected at ``alpha``, ``equivalent`` when the upper
   bound is below the tolerance, else ``inconclusive``.

Tokens are treated as independent draws of the deviation; a perturbation fixed per position
(quantized weights) is, and :mod:`tests.stats.test_equivalence` checks the false-different rate
by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

Verdict = Literal["equivalent", "different", "inconclusive"]
TOLERANCE_FLOOR = 0.002
"""Nats per token: healthy pools of the reference fleet differ by well under this (bf16 vs fp32)."""
TOLERANCE_FACTOR = 3.0


@dataclass(frozen=True)
class Comparison:
    """One equivalence test of a cell against its peers, in the terms ``canary compare`` prints."""

    statistic: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    tolerance: float
    n: int
    verdict: Verdict


def verdict_of(p_value: float, ci_high: float, tolerance: float, alpha: float) -> Verdict:
    if p_value < alpha:
        return "different"
    if ci_high < tolerance:
        return "equivalent"
    return "inconclusive"


def column_median(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``np.median(matrix, axis=0)`` by one sort: for a handful of peers, several times faster."""
    ordered = np.sort(matrix, axis=0)
    half = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        return np.asarray(ordered[half], dtype=np.float64)
    return np.asarray((ordered[half - 1] + ordered[half]) / 2.0, dtype=np.float64)


def peer_spread(peers: npt.ArrayLike) -> float:
    """Median over peers of each one's mean absolute deviation from the others' median (0 for one peer)."""
    matrix = np.atleast_2d(np.asarray(peers, dtype=np.float64))
    if matrix.shape[0] < 2:
        return 0.0
    deviations = [
        float(np.abs(matrix[i] - column_median(np.delete(matrix, i, 0))).mean())
        for i in range(matrix.shape[0])
    ]
    return float(np.median(deviations))


def forced_comparison(
    cell: npt.ArrayLike,
    peers: npt.ArrayLike,
    *,
    alpha: float = 0.001,
    floor: float = TOLERANCE_FLOOR,
    factor: float = TOLERANCE_FACTOR,
) -> Comparison:
    """The cell's per-token log-probabilities against its peers' on the same tokens (see the module)."""
    x = np.asarray(cell, dtype=np.float64)
    matrix = np.atleast_2d(np.asarray(peers, dtype=np.float64))
    if matrix.shape[1] != x.shape[0]:
        raise ValueError(f"peers score {matrix.shape[1]} tokens, the cell {x.shape[0]}")
    tolerance = max(floor, factor * peer_spread(matrix))
    n = int(x.shape[0])
    if n < 2 or matrix.shape[0] == 0:
        return Comparison(
            "forced_logprob_deviation", math.nan, math.nan, math.nan, 1.0, tolerance, n, "inconclusive"
        )
    deviation = np.abs(x - column_median(matrix))
    mean = float(deviation.mean())
    se = float(deviation.std(ddof=1)) / math.sqrt(n)
    quantile = float(sps.t.ppf(1.0 - alpha, n - 1))
    if se == 0.0:
        p_value = 0.0 if mean > tolerance else 1.0
    else:
        p_value = float(sps.t.sf((mean - tolerance) / se, n - 1))
    low, high = mean - quantile * se, mean + quantile * se
    return Comparison(
        "forced_logprob_deviation",
        mean,
        low,
        high,
        p_value,
        tolerance,
        n,
        verdict_of(p_value, high, tolerance, alpha),
    )
