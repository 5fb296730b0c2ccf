"""Wald's SPRT average sample number: the floor ``bench/detection.py`` measures the product against.

Wald 1945, *Sequential Analysis* (1947): with error rates alpha and beta, an SPRT of ``p1``
against ``p0`` on a Bernoulli stream needs, on average, the numbers below (ignoring overshoot).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canary.stats.edetector import kl_bernoulli  # noqa: E402


def _check_rates(p0: float, p1: float) -> None:
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")


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
