"""A kernel two-sample test by betting on sampled completions: bounded cost, exact at any level.

The permutation null of :func:`canary.stats.mmd.mmd_test` gives no p-value below ``1 / (1 + B)``,
and detection tests every cell every round at a level near ``1e-6`` (its share of the yearly
budget over a year's rounds): millions of permutations per cell per round. Instead, after
Shekhar & Ramdas ("Nonparametric Two-Sample Testing by Betting", IEEE Trans. Inf. Theory 2023),
the samples are taken in *steps* — the cell's ``t``-th sample ``x_t`` of a prompt and the
``t``-th samples ``y_t1 … y_tm`` of ``m`` peers — and a bettor stakes on each step:

1. The witness is the difference of the kernel mean embeddings (the Hamming kernel of
   :mod:`canary.stats.mmd`) of the cell's and the peers' samples of that prompt at earlier
   steps: ``f_t(z) = mean_{s<t} k(z, x_s) - mean_{s<t, j} k(z, y_sj)``.
2. The payoff is ``g_t = mean_j sign(f_t(x_t) - f_t(y_tj))`` in ``[-1, 1]``: does the cell's new
   sample sit nearer the cell's embedding than a peer's new sample does? (The sign, not the
   difference itself: the difference is far smaller than any bound on it, and a bet sized to
   the bound would barely grow.)
3. The wealth is ``W_t = prod_{s<=t} (1 + lambda_s g_s)``, ``lambda_s`` in ``[0, 1/2]`` by the
   online Newton step over earlier payoffs only; one-sided, since a broken cell's samples sit
   nearer its own embedding.
4. Under H0 (the cell and its peers sample one distribution per prompt), ``x_t`` and each
   ``y_tj`` are exchangeable given the earlier steps, so each sign is symmetric about zero,
   ``E[g_t | past] = 0``, and ``W`` is a nonnegative martingale: by Ville's inequality
   ``P(sup_t W_t >= 1/alpha) <= alpha`` at every sample size — no asymptotics, no
   permutations. The p-value is ``min(1, 1 / max_t W_t)``.

Cost: one sort per prompt of at most ``max_steps * (1 + peers_per_step)`` samples' tokens
and a scalar loop over the steps — bounded per cell whatever the window holds. Which samples
and peers are used depends on counts and order (time, names), never on the texts, which is what
keeps the guarantee.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from canary.stats.mmd import TOKENS, tokens

LAMBDA_MAX = 0.5
_ONS = 2.0 / (2.0 - math.log(3.0))  # the online Newton step's constant for bets in [-1/2, 1/2]
MAX_STEPS = 64
"""Steps per prompt one test looks at (the latest): bounds the cost of one cell's test."""
PEERS_PER_STEP = 8
"""Peers' samples set against each of the cell's (all, up to this many): more average out the
peers' own noise, and one broken peer among ``m`` moves a healthy cell's payoffs by ``1/m`` only."""


@dataclass(frozen=True)
class BettingResult:
    log_wealth: float  # the largest log-wealth reached: the evidence, in nats
    p_value: float  # min(1, 1 / max wealth), valid at every sample size (Ville)
    effect: float  # the mean payoff: P(cell's sample nearer its own) - P(peer's), in [-1, 1]
    steps: int


def witness_gaps(cell: npt.NDArray[np.int64], peers: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``f_t(x_t) - f_t(y_tj)`` for every step ``t`` and peer ``j`` of one prompt, as ``[m, n]``.

    ``cell`` is ``[n, L]`` and ``peers`` ``[m, n, L]`` token ids (:func:`encode_together`; -1 pads).
    The Hamming kernel's mean embedding is each position's token frequencies, so ``f_t(z)`` needs
    only, per (position, token) of ``z``, how many earlier steps' samples share it: counted by
    one sort of every (sample, position) by (position, token, step), linear in the samples
    rather than quadratic like the kernel matrix.
    """
    n, length = cell.shape
    m = peers.shape[0]
    encoded = np.concatenate([cell, peers.reshape(m * n, length)])
    step = np.tile(np.arange(n), m + 1)
    is_cell = np.arange(len(encoded)) < n
    rows, cols = np.nonzero(encoded >= 0)
    token = encoded[rows, cols]
    order = np.lexsort((step[rows], token, cols))
    rows, cols, token, at = rows[order], cols[order], token[order], step[rows[order]]
    mine = is_cell[rows].astype(np.int64)
    index = np.arange(len(rows))
    new_group = np.r_[True, (token[1:] != token[:-1]) | (cols[1:] != cols[:-1])]
    new_step = new_group | np.r_[True, at[1:] != at[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, index, 0))
    step_start = np.maximum.accumulate(np.where(new_step, index, 0))
    mine_before, theirs_before = np.cumsum(mine) - mine, np.cumsum(1 - mine) - (1 - mine)
    cell_count = mine_before[step_start] - mine_before[group_start]
    peer_count = theirs_before[step_start] - theirs_before[group_start]
    past = np.maximum(at, 1).astype(np.float64)
    share = cell_count / past - peer_count / (m * past)
    witness = np.bincount(rows, weights=share, minlength=len(encoded)) / length
    return np.asarray(witness[:n][None, :] - witness[n:].reshape(m, n), dtype=np.float64)


def step_payoffs(cell: npt.NDArray[np.int64], peers: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """One prompt's payoffs, one per step: the mean sign of the witness gaps (the first step has
    no witness yet and pays 0)."""
    payoff = np.sign(witness_gaps(cell, peers)).mean(axis=0)
    payoff[0] = 0.0
    return np.asarray(payoff, dtype=np.float64)


def bet(payoffs: npt.ArrayLike) -> float:
    """The largest log-wealth of online-Newton-step bets in ``[0, 1/2]`` on payoffs in ``[-1, 1]``."""
    lam, curvature, log_wealth, best = 0.0, 1.0, 0.0, 0.0
    for payoff in np.asarray(payoffs, dtype=np.float64).tolist():
        growth = 1.0 + lam * payoff
        log_wealth += math.log(growth)
        best = max(best, log_wealth)
        z = payoff / growth
        curvature += z * z
        lam = min(LAMBDA_MAX, max(0.0, lam + _ONS * z / curvature))
    return best


Encoded = npt.NDArray[np.int64]


@functools.lru_cache(maxsize=1 << 17)
def _hashed(text: str, length: int) -> bytes:
    """A text's first ``length`` tokens as non-negative 63-bit hashes (-1 pads), kept between rounds:
    the same stored runs are read every round, and tokenizing them is most of a round's cost.
    (Bytes, ~300 per text: the 131,072 kept cover 1,000 cells' two passes of the sampled set.)"""
    ids = np.full(length, -1, dtype=np.int64)
    found = [hash(t) & 0x7FFF_FFFF_FFFF_FFFF for t in tokens(text)[:length]]
    ids[: len(found)] = found
    return ids.tobytes()


def encode_together(texts: Sequence[Sequence[str]], length: int = TOKENS) -> list[Encoded]:
    """Several cells' texts of one prompt as ``[n, length]`` token ids, one array per cell.

    Ids are hashes of the tokens (only equality is used; two tokens collide with probability
    about 1e-19), so cells encoded apart compare as if encoded together.
    """
    return [
        np.frombuffer(b"".join(_hashed(t, length) for t in group), dtype=np.int64).reshape(len(group), length)
        for group in texts
    ]


def choose(
    cell: int, peers: Sequence[int], max_steps: int = MAX_STEPS, peers_per_step: int = PEERS_PER_STEP
) -> tuple[int, list[int]]:
    """From sample counts alone, one prompt's steps and peers: as many latest steps as the cell and
    its first ``peers_per_step`` peers (in the given order) with enough samples allow, and the
    indices of those peers (``(0, [])`` when there is nothing to test)."""
    n = min(cell, max_steps)
    enough = [j for j, count in enumerate(peers) if count >= n]
    if not enough and peers:
        n = min(n, max(peers))
        enough = [j for j, count in enumerate(peers) if count >= n]
    chosen = enough[:peers_per_step]
    return (n, chosen) if n >= 2 and chosen else (0, [])


def _chosen(
    cell: Encoded, peers: Sequence[Encoded], max_steps: int, peers_per_step: int
) -> tuple[Encoded, Encoded] | None:
    """The chosen latest steps of one prompt (:func:`choose`) as ``([n, L], [m, n, L])``."""
    n, chosen = choose(len(cell), [len(p) for p in peers], max_steps, peers_per_step)
    if not chosen:
        return None
    return cell[len(cell) - n :], np.stack([peers[j][len(peers[j]) - n :] for j in chosen])


def betting_test(
    samples: Sequence[tuple[Encoded, Sequence[Encoded]]],
    *,
    max_steps: int = MAX_STEPS,
    peers_per_step: int = PEERS_PER_STEP,
) -> BettingResult:
    """The cell against its peers over prompts: ``samples[i]`` is (the cell's samples, each peer's)
    of prompt ``i`` (see :func:`encode_together`), each in time order, the peers in a fixed order
    (by name). The bets run over the steps interleaved across prompts (step k of every prompt,
    then k + 1).
    """
    per_prompt = []
    for cell, peers in samples:
        chosen = _chosen(cell, peers, max_steps, peers_per_step)
        if chosen is not None:
            per_prompt.append(step_payoffs(*chosen))
    if not per_prompt:
        return BettingResult(0.0, 1.0, math.nan, 0)
    longest = max(len(p) for p in per_prompt)
    payoffs = [p[k] for k in range(1, longest) for p in per_prompt if k < len(p)]
    best = bet(payoffs)
    effect = float(np.mean(payoffs)) if payoffs else math.nan
    return BettingResult(best, min(1.0, math.exp(-best)), effect, len(payoffs))


def betting_test_texts(
    samples: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]], **options: int
) -> BettingResult:
    """:func:`betting_test` on texts: (the cell's, each peer's) texts per prompt."""
    encoded = []
    for cell, peers in samples:
        mine, *theirs = encode_together([cell, *peers])
        encoded.append((mine, theirs))
    return betting_test(encoded, **options)
