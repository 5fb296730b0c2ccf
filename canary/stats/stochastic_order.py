"""Anytime-valid test that a canary's values are stochastically larger than the baseline's, tail-sensitive.

The question for a continuous verdict metric (latency, output length): are the canary's values
larger than the baseline's by more than the tolerated relative ``shift``? With ``Y' = (1 + shift) Y``::

    H0: X <=st Y'   (P(X > t) <= P(Y' > t) at every level t)   against: the canary exceeds somewhere.

Kayenta's case (7 of 10 canary values at 100, all 10 baseline values at 1) is a canary tail far
above anything the baseline does, the rest tied: the medians' sign test cannot see it (e = 0.69 at
10 values a side), a test of stochastic order can.

**Testing by betting on pairs** (Shekhar & Ramdas 2023, "Nonparametric two-sample testing by
betting"; the stochastic-order null as Netflix's canaries use it, Lindon, Sanden & Shirikian,
KDD 2022). The i-th canary value is paired with the i-th baseline value and the pair pays
``h_i = k_i(X_i, Y'_i) - k_i(Y'_i, X_i)`` in ``{-1, 0, 1}``, for a comparison ``k_i`` fixed before the
pair is seen, nondecreasing in its first argument and nonincreasing in its second. Why that is
fair under H0: couple ``X <= X''`` with ``X''`` distributed as ``Y'`` (quantile coupling); then
``E k(X, Y') <= E k(X'', Y')`` and ``E k(Y', X) >= E k(Y', X'')``, and ``(X'', Y')`` is exchangeable,
so ``E h_i <= 0`` given the past. Hence for every ``lambda`` in ``[0, 1]``, ``prod (1 + lambda h_i)`` is a
nonnegative supermartingale with mean at most 1, and so is any mixture of such (over ``lambda`` and
over strategies): by Ville's inequality ``P(E_n >= 1/alpha for some n) <= alpha`` however often one
looks. Only comparisons enter, so ties, discrete values and heavy tails need no assumption.

The e-value is half and half of two strategies, each mixed over the bet ``lambda``:

- **sign**: ``k(x, y) = 1[x > y]``, ``h_i = sign(X_i - Y'_i)``; ``lambda`` uniform on ``[0, 1]``, which in
  closed form is the sign test's e-value on the wins and losses
  (:func:`canary.stats.median_shift.log_e_above_half`). Its power depends only on the
  *dominance* ``delta = P(X > Y') - P(X < Y')``, so it sizes the test (below).
- **tail**: ``k_i(x, y) = 1[x > c_i]`` for a level ``c_i`` among the earlier pairs' values, or the gross
  comparison ``1[x > GROSS_RATIO y]`` (one value more than twice the other), whichever the earlier
  pairs favour most (z-score of their wins over losses; the gross comparison on ties, so it judges
  the first pair). A level catches a canary tail above the baseline's however the bulk compares;
  ``lambda`` is Beta(2, 1) (discretised), bold, because a tail that shows at all shows clearly.

In Kayenta's case the tail strategy wins all 7 untied pairs whatever their order: ``E = 25.6`` at 10
pairs, over ``1/alpha = 20`` (with two deciding metrics sharing alpha, 40, it takes 20 pairs: 1911).
The most there is: any e-value that treats each side's values as a set has mean at most 1 under
the permutation null, so at most ``C(20,7)/C(10,7) = 646`` there (the exact permutation p-value is
1/646 = 0.0015); one that bets pair by pair gains at most a factor 2 a pair, 2^7 = 128 from these
7 pairs, and only by staking everything on each, which a test with power at moderate effects
cannot do.

**Power and size** come from the sign strategy alone (``E >= E_sign / 2``), so they hold for every
pair of distributions with dominance ``delta``: without ties, wins ~ Bin(n, (1 + delta)/2), and
:func:`dominance_power` is exact; ties leave fewer decisive pairs that are more often won, which
raises the power (checked numerically up to the count's discreteness, in the tests). The tail
strategy only adds power. Assumptions: each side's values are independent draws from one
distribution for the window, in an order that does not depend on their values (callers pair them
by time), and a growing sample: a sliding window or re-ordered history is not one process.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from canary.stats.median_shift import log_e_above_half
from canary.stats.two_sample import smallest_sufficient

FloatArray = npt.NDArray[np.float64]

GROSS_RATIO = 2.0  # the tail strategy's comparison before any level is learned
SIGN_WEIGHT = 0.5  # the sign strategy's share of the e-value (the tail's is the rest)
_BETS = (np.arange(64) + 0.5) / 64  # the tail strategy's lambda grid, Beta(2, 1) weights
_LOG_BET_WEIGHTS = np.log(_BETS / _BETS.sum())
EXACT_FIT = 8  # the tail's witness is refitted before each of the first pairs, then every n/4


@dataclass(frozen=True)
class OrderEvidence:
    """The e-value against ``X <=st (1 + shift) Y`` and the counts behind it."""

    log_e: float
    pairs: int
    wins: int  # pairs where the canary value exceeds (1 + shift) x its baseline partner
    losses: int  # pairs where it falls below
    tail_wins: int
    tail_losses: int

    @property
    def dominance(self) -> float:
        """``(wins - losses) / pairs``: the estimate of ``P(X > Y') - P(X < Y')`` (nan with no pair)."""
        return (self.wins - self.losses) / self.pairs if self.pairs else math.nan


def _log_e_bold(wins: int, losses: int) -> float:
    """``log sum_j w_j (1 + l_j)^wins (1 - l_j)^losses`` over the Beta(2, 1) grid of bets."""
    terms = _LOG_BET_WEIGHTS + wins * np.log1p(_BETS) + losses * np.log1p(-_BETS)
    top = float(terms.max())
    return top + math.log(float(np.exp(terms - top).sum()))


def _fit_points(n: int) -> list[int]:
    """Pairs before which the tail's witness is refitted: each of the first, then every ``i/4``."""
    points, i = [], 0
    while i < n:
        points.append(i)
        i += 1 if i < EXACT_FIT else i // 4
    return points


def _z(wins: FloatArray, losses: FloatArray) -> FloatArray:
    return np.asarray((wins - losses) / np.sqrt(wins + losses + 1.0), dtype=np.float64)


def tail_payoffs(x: FloatArray, y: FloatArray) -> npt.NDArray[np.int64]:
    """The tail strategy's ``h_i`` for pairs ``(x_i, y_i)`` (``y`` already scaled), each from a witness
    fitted on the pairs before it only.

    A level ``c`` scores the earlier pairs it separates: wins ``#{y_j <= c < x_j}``, losses
    ``#{x_j <= c < y_j}``, counted for every level at once with difference arrays over the sorted
    values; only levels already seen are candidates (a future value must not steer a bet).
    """
    n = x.size
    gross = (x > GROSS_RATIO * y).astype(np.int64) - (y > GROSS_RATIO * x).astype(np.int64)
    levels = np.unique(np.concatenate([x, y]))
    ix, iy = np.searchsorted(levels, x), np.searchsorted(levels, y)
    up, down = np.zeros(levels.size + 1), np.zeros(levels.size + 1)
    seen = np.zeros(levels.size, dtype=bool)
    out = np.array(gross)
    gross_wins = np.concatenate([[0], np.cumsum(gross > 0)])
    gross_losses = np.concatenate([[0], np.cumsum(gross < 0)])
    points = [*_fit_points(n), n]
    for start, stop in zip(points[:-1], points[1:], strict=True):
        if start:
            z = _z(up[:-1].cumsum()[seen], down[:-1].cumsum()[seen])
            best = int(z.argmax())
            if z[best] > (gross_wins[start] - gross_losses[start]) / math.sqrt(
                gross_wins[start] + gross_losses[start] + 1.0
            ):
                c = levels[seen][best]
                out[start:stop] = (x[start:stop] > c).astype(np.int64) - (y[start:stop] > c)
        # The block's pairs join the fit for the next one.
        bx, by = ix[start:stop], iy[start:stop]
        won, lost = bx > by, by > bx
        np.add.at(up, by[won], 1.0)
        np.add.at(up, bx[won], -1.0)
        np.add.at(down, bx[lost], 1.0)
        np.add.at(down, by[lost], -1.0)
        seen[bx] = True
        seen[by] = True
    return out


def _paired(canary: npt.ArrayLike, baseline: npt.ArrayLike, shift: float) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(canary, dtype=np.float64).ravel()
    y = np.asarray(baseline, dtype=np.float64).ravel()
    n = min(x.size, y.size)
    return x[:n], (1.0 + shift) * y[:n]


def _log_e_sign(wins: FloatArray, losses: FloatArray) -> FloatArray:
    """:func:`~canary.stats.median_shift.log_e_above_half` elementwise: ``n = wins + losses`` may vary."""
    n = wins + losses
    with np.errstate(divide="ignore"):
        tail = np.log(special.betaincc(wins + 1.0, losses + 1.0, 0.5))
    return np.asarray((n + 1.0) * math.log(2.0) + special.betaln(wins + 1.0, losses + 1.0) + tail)


def _combine(log_sign: FloatArray, log_tail: FloatArray) -> FloatArray:
    return np.asarray(np.logaddexp(math.log(SIGN_WEIGHT) + log_sign, math.log(1.0 - SIGN_WEIGHT) + log_tail))


def order_path(canary: npt.ArrayLike, baseline: npt.ArrayLike, shift: float = 0.0) -> FloatArray:
    """The log e-value after each pair: ``order_path(...)[k - 1]`` is ``order_evidence`` of the first
    ``k`` values a side (the process a verdict watches, in one pass)."""
    x, y = _paired(canary, baseline, shift)
    if x.size == 0:
        return np.zeros(0)
    sign, tail = np.sign(x - y), tail_payoffs(x, y)
    cum = [np.cumsum(v).astype(np.float64) for v in (sign > 0, sign < 0, tail > 0, tail < 0)]
    bold = _LOG_BET_WEIGHTS + np.multiply.outer(cum[2], np.log1p(_BETS))
    bold += np.multiply.outer(cum[3], np.log1p(-_BETS))
    return _combine(_log_e_sign(cum[0], cum[1]), special.logsumexp(bold, axis=1))


def order_evidence(canary: npt.ArrayLike, baseline: npt.ArrayLike, shift: float = 0.0) -> OrderEvidence:
    """The e-value against ``canary <=st (1 + shift) baseline`` from the values so far, in time order.

    Pairs the first ``min(len)`` values of each side; with no pair there is no evidence (``E = 1``).
    """
    x, y = _paired(canary, baseline, shift)
    n = x.size
    if n == 0:
        return OrderEvidence(0.0, 0, 0, 0, 0, 0)
    wins, losses = int(np.sum(x > y)), int(np.sum(x < y))
    tail = tail_payoffs(x, y)
    tail_wins, tail_losses = int(np.sum(tail > 0)), int(np.sum(tail < 0))
    log_sign = float(log_e_above_half(wins, wins + losses))
    log_e = float(_combine(np.array(log_sign), np.array(_log_e_bold(tail_wins, tail_losses))))
    return OrderEvidence(log_e, n, wins, losses, tail_wins, tail_losses)


@functools.lru_cache(maxsize=65536)
def _critical_wins(pairs: int, threshold: float) -> int | None:
    """The fewest wins in ``pairs`` untied pairs whose sign e-value reaches ``threshold / SIGN_WEIGHT``."""
    table = log_e_above_half(np.arange(pairs + 1), pairs)
    reached = np.nonzero(table >= math.log(threshold / SIGN_WEIGHT))[0]
    return int(reached[0]) if reached.size else None


def dominance_power(pairs: int, dominance: float, threshold: float) -> float:
    """``P(E >= threshold)`` guaranteed at ``pairs`` pairs of dominance ``dominance``, from the sign
    strategy without ties (exact binomial; see the module docstring). The last look alone."""
    if pairs < 1:
        return 0.0
    crit = _critical_wins(pairs, threshold)
    if crit is None:
        return 0.0
    return float(stats.binom.sf(crit - 1, pairs, 0.5 * (1.0 + dominance)))


@functools.lru_cache(maxsize=65536)
def dominance_mde(pairs: int, threshold: float, power: float) -> float:
    """The smallest dominance detected with probability ``power`` at ``pairs`` pairs, to 5e-4.

    ``inf`` when even a canary above its partner in every pair would not be (too few pairs).
    """
    if dominance_power(pairs, 1.0, threshold) < power:
        return math.inf
    lo, hi = 0.0, 1.0
    while hi - lo > 5e-4:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if dominance_power(pairs, mid, threshold) >= power else (mid, hi)
    return hi


def dominance_sample_size(dominance: float, threshold: float, power: float, max_n: int = 1_000_000) -> int:
    """Pairs (values a side) for ``dominance_power >= power``: doubling, then bisection (the power of
    a discrete test is not exactly monotone in n, so within a pair or two of the smallest)."""
    if not 0.0 < dominance <= 1.0:
        raise ValueError(f"need 0 < dominance <= 1, got {dominance}")
    return smallest_sufficient(lambda n: dominance_power(n, dominance, threshold) >= power, max_n, "pairs")
