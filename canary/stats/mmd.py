"""Maximum Mean Discrepancy on a string kernel: do two cells sample from the same distribution?

For platforms that return no logprobs (Anthropic, Bedrock, Vertex) the only evidence is text:
completions sampled at temperature > 0 from a cell and from its peers on the same prompts.
Following Gao, Liang & Guestrin ("Model Equality Testing: Which model is this API serving?",
ICLR 2025), a sample is a (prompt, completion) pair and the kernel is

    k((p, x), (q, y)) = 1[p = q] * (1/L) * sum_{i < L} 1[x_i = y_i]

the Hamming kernel over the first ``L`` tokens of each completion (padded), zero across
prompts. The statistic is the unbiased estimate of MMD^2 between the two samples; its null is
a permutation of the cell/peer labels within each prompt (both samples ask every prompt, so
the labels are exchangeable under H0), which gives an exact p-value ``(1 + #{MMD*^2 >= MMD^2})
/ (1 + B)``. Tokens are words, digits, punctuation and single Han, kana, Hangul or Thai
characters (no model's tokenizer is needed: only equality between positions is used).

Speed, with the level unchanged:

- The kernel is zero across prompts and a permutation keeps each prompt's label counts, so the
  statistic is ``c_q * w'Kw + c_l * w'K1 + c_d * w'diag(K) + c_0`` in the cell's label
  indicators ``w``, and ``w'Kw`` is a sum over the prompts' own blocks: one small matrix
  product per prompt instead of two over the whole sample.
- Sequential Monte Carlo (Besag & Clifford, "Sequential Monte Carlo p-values", Biometrika
  1991): permutations stop once ``h`` of them reach the observed statistic, with p-value
  ``h / l`` after ``l`` draws; otherwise the plain ``(1 + g) / (1 + B)``. Both are exact.
  With ``h >= alpha * (1 + B)`` a stopped test could not have rejected at ``alpha`` anyway,
  so the decision at ``alpha`` is the full permutation test's; only a p-value far above
  ``alpha`` comes out coarser. Samples from the same distribution stop after a few dozen
  permutations; only a rejection pays for all ``B``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import regex

_TOKEN = regex.compile(r"\p{Han}|\p{Hiragana}|\p{Katakana}|\p{Hangul}|\p{Thai}|\p{L}+|\d|\S")
_FIRST, _CHUNK = 64, 1024  # permutations per block of matrix products, doubling from 64 to 1024
_TIE = 1e-12  # a permuted statistic this close below the observed one counts as reaching it
Floats = npt.NDArray[np.floating[Any]]
TOKENS = 32
"""L: completions are compared on their first this many tokens."""
EXCEEDANCES = 10
"""Besag–Clifford's ``h`` (at least): permutations reaching the observed statistic before stopping."""


def tokens(text: str) -> list[str]:
    return list(_tokens(text))


@functools.lru_cache(maxsize=1 << 16)
def _tokens(text: str) -> tuple[str, ...]:
    """Cached: a sequential audit encodes the same samples again at every look."""
    return tuple(_TOKEN.findall(text))


def encode(texts: Sequence[str], length: int = TOKENS) -> npt.NDArray[np.int64]:
    """Texts as ``[n, length]`` token ids, -1 padded (padding never matches a token)."""
    ids: dict[str, int] = {}
    out = np.full((len(texts), length), -1, dtype=np.int64)
    for row, text in enumerate(texts):
        for col, token in enumerate(_tokens(text)[:length]):
            out[row, col] = ids.setdefault(token, len(ids))
    return out


def equal_counts(encoded: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per pair of completions, the positions holding the same token (padding matches nothing)."""
    equal = (encoded[:, None, :] == encoded[None, :, :]) & (encoded[:, None, :] >= 0)
    return np.asarray(equal.sum(axis=2), dtype=np.int64)


def hamming_gram(encoded: npt.NDArray[np.int64], prompts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The kernel matrix: shared positions with equal tokens over ``L``, zero across prompts."""
    gram = equal_counts(encoded) / float(encoded.shape[1])
    return np.where(prompts[:, None] == prompts[None, :], gram, 0.0)


def mmd2(gram: npt.NDArray[np.float64], is_a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Unbiased MMD^2 between the samples marked True and the rest, one value per row of ``is_a``.

    Quadratic forms in the label indicators, so thousands of permutations cost one matrix product.
    """
    w = np.atleast_2d(np.asarray(is_a, dtype=np.float64))
    n, m = w.sum(axis=1), w.shape[1] - w.sum(axis=1)
    quadratic = (w @ gram * w).sum(axis=1)
    return _from_forms(quadratic, w @ gram.sum(axis=1), w @ np.diag(gram), gram, n, m)


def _from_forms(
    quadratic: npt.NDArray[np.float64],
    linear: npt.NDArray[np.float64],
    diagonal: npt.NDArray[np.float64],
    gram: npt.NDArray[np.float64] | tuple[float, float],
    n: npt.NDArray[np.float64] | float,
    m: npt.NDArray[np.float64] | float,
) -> npt.NDArray[np.float64]:
    """MMD^2 from ``w'Kw``, ``w'K1`` and ``w'diag(K)``; ``gram`` or its (``1'K1``, trace).

    With ``v = 1 - w``: ``v'Kv = 1'K1 - 2 w'K1 + w'Kw`` and ``w'Kv = w'K1 - w'Kw``.
    """
    total, trace = (float(gram.sum()), float(np.trace(gram))) if isinstance(gram, np.ndarray) else gram
    within_a = (quadratic - diagonal) / np.maximum(n * (n - 1), 1.0)
    within_b = (total - 2.0 * linear + quadratic - (trace - diagonal)) / np.maximum(m * (m - 1), 1.0)
    across = (linear - quadratic) / np.maximum(n * m, 1.0)
    return np.asarray(within_a + within_b - 2.0 * across, dtype=np.float64)


@dataclass(frozen=True)
class MMDResult:
    statistic: float  # MMD^2, unbiased
    p_value: float
    null_quantile: float  # the 1 - alpha quantile of the permutations drawn, for scale
    n_a: int
    n_b: int
    permutations: int = 0  # drawn: fewer than asked when the sequential test stopped early


class _Strata:
    """Each prompt's kernel block, as integer counts of equal positions, and the cell's labels in it.

    The forms are sums of integers: in float32 (twice the speed of float64 products) they are
    exact while every sum stays below 2^24, so ties between permuted and observed statistics
    are exact ties.
    """

    def __init__(
        self, encoded: npt.NDArray[np.int64], prompts: npt.NDArray[np.int64], is_a: npt.NDArray[np.bool_]
    ) -> None:
        self.members = [np.flatnonzero(prompts == p) for p in np.unique(prompts)]
        counts = [equal_counts(encoded[s]) for s in self.members]
        self.scale = float(encoded.shape[1])
        exact32 = all(int(c.sum()) < 2**24 for c in counts)
        self.dtype: type[np.floating[Any]] = np.float32 if exact32 else np.float64
        self.blocks: list[Floats] = [c.astype(self.dtype) for c in counts]
        self.row_sums: list[Floats] = [c.sum(axis=1).astype(self.dtype) for c in counts]
        self.diagonals: list[Floats] = [np.diag(c).astype(self.dtype) for c in counts]
        self.labels = [is_a[s] for s in self.members]
        self.n, self.m = float(is_a.sum()), float((~is_a).sum())
        self.total = math.fsum(float(c.sum()) for c in counts) / self.scale
        self.trace = math.fsum(float(np.trace(c)) for c in counts) / self.scale

    def statistic(self, rng: np.random.Generator | None, count: int) -> npt.NDArray[np.float64]:
        """``count`` permuted statistics (the observed one, once, when ``rng`` is None)."""
        quadratic, linear, diagonal = np.zeros(count), np.zeros(count), np.zeros(count)
        for block, row_sums, diag, labels in zip(
            self.blocks, self.row_sums, self.diagonals, self.labels, strict=True
        ):
            w: Floats = _shuffled(labels, count, rng).astype(self.dtype)
            quadratic += (w @ block * w).sum(axis=1, dtype=np.float64)
            linear += w @ row_sums
            diagonal += w @ diag
        forms = (quadratic / self.scale, linear / self.scale, diagonal / self.scale)
        return _from_forms(*forms, (self.total, self.trace), self.n, self.m)


def _shuffled(
    labels: npt.NDArray[np.bool_], count: int, rng: np.random.Generator | None
) -> npt.NDArray[np.bool_]:
    """``count`` uniform permutations of ``labels`` (the labels themselves without ``rng``).

    The rows whose ``k`` smallest uniforms mark the cell's ``k`` labels: a partition, cheaper
    than shuffling; a row with a tie at the threshold (about 1e-12) is shuffled instead.
    """
    k = int(labels.sum())
    if rng is None or k in (0, len(labels)):
        return np.repeat(labels[None, :], count, axis=0)
    uniforms = rng.random((count, len(labels)))
    threshold = np.partition(uniforms, k - 1, axis=1)[:, k - 1 : k]
    out = uniforms <= threshold
    tied = np.flatnonzero(out.sum(axis=1) != k)
    if len(tied):
        out[tied] = rng.permuted(np.repeat(labels[None, :], len(tied), axis=0), axis=1)
    return out


def mmd_test(
    a: Sequence[tuple[int, str]],
    b: Sequence[tuple[int, str]],
    rng: np.random.Generator,
    *,
    permutations: int = 4000,
    alpha: float = 0.001,
    length: int = TOKENS,
    sequential: bool = True,
    exceedances: int = EXCEEDANCES,
) -> MMDResult:
    """MMD two-sample test of (prompt index, completion) samples ``a`` against ``b``.

    1. Encode every completion's first ``length`` tokens; build each prompt's kernel block once.
    2. The observed MMD^2 with the true labels.
    3. Up to ``permutations`` times, shuffle the labels within each prompt and recompute (in
       blocks of matrix products); with ``sequential``, stop once
       ``h = max(exceedances, ceil(alpha * (1 + permutations)))`` permuted statistics reached
       the observed one (Besag–Clifford: p = h / l at the ``l``-th draw), which leaves the
       decision at ``alpha`` as the full test's (a smaller ``exceedances`` stops sooner, with a
       coarser p-value above ``alpha``).
    4. Otherwise the p-value counts the permuted statistics at least as large, plus one: it can
       go no lower than ``1 / (1 + permutations)``, so test at ``alpha`` with at least ``1 / alpha``.
    """
    samples = [*a, *b]
    prompts = np.array([p for p, _ in samples], dtype=np.int64)
    is_a = np.zeros(len(samples), dtype=bool)
    is_a[: len(a)] = True
    strata = _Strata(encode([t for _, t in samples], length), prompts, is_a)
    observed = float(strata.statistic(None, 1)[0])
    stop = max(exceedances, math.ceil(alpha * (1 + permutations))) if sequential else permutations + 1
    drawn: list[npt.NDArray[np.float64]] = []
    reached = 0
    p_value = math.nan
    start, size = 0, _FIRST
    while start < permutations:
        null = strata.statistic(rng, min(size, permutations - start))
        hits = np.flatnonzero(null >= observed - _TIE)
        if reached + len(hits) >= stop:
            last = int(hits[stop - reached - 1])  # where the h-th exceedance fell
            drawn.append(null[: last + 1])
            p_value = stop / (start + last + 1)
            break
        reached += len(hits)
        drawn.append(null)
        start, size = start + len(null), min(2 * size, _CHUNK)
    null = np.concatenate(drawn) if drawn else np.empty(0)
    if math.isnan(p_value):
        p_value = (1.0 + reached) / (1.0 + permutations)
    quantile = float(np.quantile(null, 1.0 - alpha)) if len(null) else float("nan")
    return MMDResult(observed, p_value, quantile, len(a), len(b), len(null))
