"""Greedy agreement: at temperature 0, how often and where a cell's output leaves its peers'.

Healthy servers that are not batch-invariant diverge sometimes at temperature 0 (a near-tie
between two tokens falls either way), so the test is the cell's divergence rate against its
peers' own, never against zero:

1. Per prompt, the reference is the *consensus* of the peers' outputs (:func:`consensus`: the
   text more than half of them gave), never a first answer kept forever; a peer's own
   divergence is counted against the consensus of the *other* peers.
2. A cell's output that differs from the reference is a divergence, at the token where it first
   differs (:func:`first_divergent_token`).
3. The cell's divergences against the peers', one 2x2 table per prompt, in a one-sided
   Cochran-Mantel-Haenszel test (prompts differ in how often they diverge); the effect is the
   pooled rate difference with Newcombe's interval. A prompt without a consensus tells nothing
   and is skipped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from canary.stats.equivalence import Comparison, verdict_of
from canary.stats.mmd import tokens
from canary.stats.rates import cmh_test, rate_difference_ci


def consensus(texts: Sequence[str], quorum: float = 0.5) -> str | None:
    """The text more than ``quorum`` of ``texts`` agree on, or None when there is no such majority."""
    if not texts:
        return None
    text, count = Counter(texts).most_common(1)[0]
    return text if count > quorum * len(texts) else None


def first_divergent_token(text: str, reference: str) -> int | None:
    """The index of the first token where ``text`` leaves ``reference`` (None when they are equal)."""
    if text == reference:
        return None
    a, b = tokens(text), tokens(reference)
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def greedy_comparison(
    cell: Mapping[str, Sequence[str]],
    peers: Mapping[str, Sequence[Sequence[str]]],
    *,
    alpha: float = 0.001,
    tolerance: float = 0.05,
) -> tuple[Comparison, list[int]]:
    """The cell's temperature-0 outputs per prompt against each peer's; also the divergence positions.

    ``cell[prompt]`` is the cell's outputs (passes) for a prompt, ``peers[prompt][j]`` peer
    ``j``'s. The verdict is ``different`` when the cell diverges more often than its peers
    (CMH, ``alpha``), ``equivalent`` when the upper bound of the rate difference is below
    ``tolerance``.
    """
    f1, n1, f0, n0 = [], [], [], []
    positions: list[int] = []
    for prompt, outputs in cell.items():
        by_peer = peers.get(prompt, ())
        reference = consensus([t for outs in by_peer for t in outs])
        if reference is None or not outputs:
            continue
        cell_positions = [first_divergent_token(t, reference) for t in outputs]
        positions.extend(p for p in cell_positions if p is not None)
        peer_fails = peer_n = 0
        for j, outs in enumerate(by_peer):
            own = consensus([t for k, o in enumerate(by_peer) if k != j for t in o])
            if own is None:
                continue
            peer_fails += sum(t != own for t in outs)
            peer_n += len(outs)
        f1.append(sum(p is not None for p in cell_positions))
        n1.append(len(outputs))
        f0.append(peer_fails)
        n0.append(peer_n)
    if not n1 or sum(n0) == 0:
        return Comparison(
            "greedy_divergence", math.nan, math.nan, math.nan, 1.0, tolerance, sum(n1), "inconclusive"
        ), []
    test = cmh_test(np.array(f1), np.array(n1), np.array(f0), np.array(n0))
    low, high = rate_difference_ci(sum(f1), sum(n1), sum(f0), sum(n0), confidence=1.0 - 2.0 * alpha)
    effect = sum(f1) / sum(n1) - sum(f0) / sum(n0)
    verdict = verdict_of(test.p_value, high, tolerance, alpha)
    return Comparison(
        "greedy_divergence", effect, low, high, test.p_value, tolerance, sum(n1), verdict
    ), positions
