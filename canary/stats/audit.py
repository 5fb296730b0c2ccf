"""``canary compare``'s judgement: each cell's evidence against its peers', test by test (pure).

The evidence comes in plain mappings (see :mod:`canary.probing.audit`): forced log-probabilities
per (probe, round), temperature-0 texts per probe, sampled texts per probe. Each test compares
the cell with its peers on what they all answered:

- ``forced``: the (probe, round) keys every one of them scored, against the peers that cut them
  into as many tokens as the cell (a cell no peer agrees with has a different tokenizer: a
  different model, reported as such); a peer that scored nothing at all (down, or refusing
  echo) is left out;
- ``greedy``: the prompts the cell and at least two peers answered;
- ``sampled``: the cell's samples against the peers' pooled, prompt by prompt (MMD).

``alpha`` is the level of the whole table: each test runs at ``alpha / tests`` (Bonferroni).
A cell is ``different`` when any test says so, ``equivalent`` when at least one does and none
says different, else ``inconclusive``; the table's exit code follows (1 / 0 / 2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from canary.stats.agreement import greedy_comparison
from canary.stats.equivalence import Comparison, Verdict, forced_comparison
from canary.stats.mmd import mmd_test

Forced = Mapping[tuple[str, int], Sequence[float]]
Texts = Mapping[str, Sequence[str]]


def continuation_span(pieces: Sequence[tuple[str, float]], start: int, end: int) -> list[float] | None:
    """The log-probabilities of the tokens that begin in characters ``[start, end)`` of the echoed text.

    ``pieces`` are the echo's (token, log-probability) pairs in order; the continuation of a
    forced probe starts at ``len(prompt)`` and ends at ``len(prompt + continuation)``.
    """
    position, scored = 0, []
    for token, logprob in pieces:
        if start <= position < end:
            scored.append(float(logprob))
        position += len(token)
    return scored or None


def _inconclusive(statistic: str, n: int = 0) -> Comparison:
    return Comparison(statistic, math.nan, math.nan, math.nan, 1.0, math.nan, n, "inconclusive")


def compare_forced(cell: Forced, peers: Sequence[Forced], alpha: float) -> Comparison:
    peers = [p for p in peers if p]  # a peer that scored nothing (down, refusing echo) is no evidence
    keys = [k for k in cell if peers and all(k in p for p in peers)]
    # Peers that cut the shared texts into as many tokens as the cell; one odd peer (another
    # tokenizer) is left out rather than making every other cell look different.
    agreeing = [p for p in peers if all(len(p[k]) == len(cell[k]) for k in keys)]
    if keys and not agreeing:
        # No peer cut the shared texts as the cell did: not the same tokenizer, not the same model.
        return Comparison("forced_token_count", 1.0, 1.0, 1.0, 0.0, 0.0, len(keys), "different")
    peers, same = agreeing, keys
    if not same:
        return _inconclusive("forced_logprob_deviation")
    x = np.concatenate([np.asarray(cell[k], dtype=np.float64) for k in same])
    matrix = np.stack([np.concatenate([np.asarray(p[k], dtype=np.float64) for k in same]) for p in peers])
    return forced_comparison(x, matrix, alpha=alpha)


def compare_greedy(cell: Texts, peers: Sequence[Texts], alpha: float) -> Comparison:
    prompts = [k for k in cell if sum(k in p for p in peers) >= 2]
    if not prompts:
        return _inconclusive("greedy_divergence")
    mine = {k: list(cell[k]) for k in prompts}
    theirs = {k: [list(p[k]) for p in peers if k in p] for k in prompts}
    result, positions = greedy_comparison(mine, theirs, alpha=alpha)
    if not positions:
        return result
    # Where the cell's answers leave the consensus, for the on-call reader: the median first token.
    where = f"{result.statistic} (median first divergent token {int(np.median(positions))})"
    return dataclasses.replace(result, statistic=where)


def compare_sampled(
    cell: Texts, peers: Sequence[Texts], alpha: float, rng: np.random.Generator
) -> Comparison:
    prompts = sorted(k for k in cell if any(k in p for p in peers))
    a = [(i, t) for i, k in enumerate(prompts) for t in cell[k]]
    b = [(i, t) for i, k in enumerate(prompts) for p in peers for t in p.get(k, ())]
    if len(a) < 2 or len(b) < 2:
        return _inconclusive("mmd_hamming", len(a))
    permutations = max(4000, int(math.ceil(2.0 / alpha)))
    result = mmd_test(a, b, rng, permutations=permutations, alpha=alpha)
    verdict: Verdict = "different" if result.p_value < alpha else "inconclusive"
    # MMD has no tolerance of its own: the column shows the permutation null's critical value.
    return Comparison(
        "mmd_hamming",
        result.statistic,
        math.nan,
        math.nan,
        result.p_value,
        result.null_quantile,
        len(a),
        verdict,
    )


def cell_verdict(comparisons: Sequence[Comparison]) -> Verdict:
    verdicts = {c.verdict for c in comparisons}
    if "different" in verdicts:
        return "different"
    return "equivalent" if "equivalent" in verdicts else "inconclusive"


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """1 when any cell is different, 0 when every cell is equivalent, 2 otherwise (not enough evidence)."""
    if "different" in verdicts:
        return 1
    return 0 if verdicts and all(v == "equivalent" for v in verdicts) else 2
