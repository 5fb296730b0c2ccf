"""Where and how failures gather: a change point in time, clustering within sticky sessions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SessionClustering:
    """Whether failures cluster in sessions beyond a common rate.

    ``icc`` is the intra-session correlation of the failure indicator (ANOVA estimator); ``nan`` when
    undefined (no failures, or no passes, or a single session).
    """

    p_value: float
    icc: float
    statistic: float
    sessions: int
    failures: int
    n: int


def _anova_icc(f: npt.NDArray[np.float64], n: npt.NDArray[np.float64]) -> float:
    """ANOVA estimator of the intra-class correlation for binary outcomes (Fleiss 1981; Ridout et al. 1999).

    ``rho = (MSB - MSW) / (MSB + (n_a - 1) MSW)`` with ``n_a = (N - sum n_i^2 / N) / (k - 1)``.
    """
    k, big_n, big_f = f.size, float(n.sum()), float(f.sum())
    msb = (float(np.sum(f * f / n)) - big_f * big_f / big_n) / (k - 1)
    msw = (big_f - float(np.sum(f * f / n))) / (big_n - k) if big_n > k else 0.0
    n_a = (big_n - float(np.sum(n * n)) / big_n) / (k - 1)
    denom = msb + (n_a - 1.0) * msw
    return float((msb - msw) / denom) if denom > 0 else math.nan


def session_clustering(
    failures_by_session: Mapping[str, tuple[int, int]], rng: np.random.Generator, permutations: int = 9999
) -> SessionClustering:
    """Test whether failures cluster within sessions (sticky routing) more than a common rate allows.

    1. Statistic: Pearson's ``X^2 = sum (f_i - n_i p)^2 / (n_i p (1-p))`` over sessions, ``p`` pooled.
    2. Null: runs are exchangeable across sessions, so the session failure counts are a multivariate
       hypergeometric draw of the total failures over the session sizes. Sampling it with ``rng``
       keeps the test exact for the tiny expected counts where the chi-square approximation fails.
    3. p-value ``(1 + #{X^2_perm >= X^2_obs}) / (1 + permutations)`` (Phipson & Smyth 2010).
    The ICC (:func:`_anova_icc`) says how strongly a session's runs share their fate.
    """
    counts = np.array(list(failures_by_session.values()), dtype=np.int64).reshape(-1, 2)
    f, n = counts[:, 0], counts[:, 1]
    if np.any(f < 0) or np.any(f > n) or np.any(n < 1):
        raise ValueError("each session needs 1 <= n and 0 <= failures <= n")
    total_f, total_n, k = int(f.sum()), int(n.sum()), f.size
    if k < 2 or total_f == 0 or total_f == total_n:
        return SessionClustering(1.0, math.nan, 0.0, k, total_f, total_n)
    p = total_f / total_n
    expected_var = n * p * (1.0 - p)

    def chi2(fs: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return np.asarray(np.sum((fs - n * p) ** 2 / expected_var, axis=-1), dtype=np.float64)

    observed = float(chi2(f))
    null = chi2(rng.multivariate_hypergeometric(n, total_f, size=permutations))
    # A relative tolerance so that ties with the observed table, up to rounding, count as "as extreme".
    exceed = int(np.count_nonzero(null >= observed * (1.0 - 1e-12)))
    p_value = (1 + exceed) / (1 + permutations)
    return SessionClustering(
        p_value, _anova_icc(f.astype(np.float64), n.astype(np.float64)), observed, k, total_f, total_n
    )
