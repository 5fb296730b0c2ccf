"""Multiple-testing control across the many (cell, metric) streams."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def benjamini_hochberg(p_values: npt.ArrayLike, q: float = 0.05) -> npt.NDArray[np.bool_]:
    """Benjamini-Hochberg step-up procedure: which hypotheses to reject at false discovery rate ``q``.

    Sort the ``m`` p-values, find the largest ``k`` with ``p_(k) <= k q / m`` and reject the ``k``
    smallest (Benjamini & Hochberg 1995, JRSS B 57: 289-300). Controls the FDR at ``q`` for independent
    or positively dependent (PRDS) p-values; agrees with ``scipy.stats.false_discovery_control``
    (``adjusted <= q``). Returns a boolean mask in the input's order and shape.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be in [0, 1]")
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    passed = flat[order] <= q * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if passed.any():
        k = int(np.nonzero(passed)[0][-1])
        reject[order[: k + 1]] = True
    return reject.reshape(p.shape)
