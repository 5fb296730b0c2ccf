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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import regex

_TOKEN = regex.compile(r"\p{Han}|\p{Hiragana}|\p{Katakana}|\p{Hangul}|\p{Thai}|\p{L}+|\d|\S")
_CHUNK = 2000  # permutations per matrix product
TOKENS = 32
"""L: completions are compared on their first this many tokens."""


def tokens(text: str) -> list[str]:
    found: list[str] = _TOKEN.findall(text)
    return found


def encode(texts: Sequence[str], length: int = TOKENS) -> npt.NDArray[np.int64]:
    """Texts as ``[n, length]`` token ids, -1 padded (padding never matches a token)."""
    ids: dict[str, int] = {}
    out = np.full((len(texts), length), -1, dtype=np.int64)
    for row, text in enumerate(texts):
        for col, token in enumerate(tokens(text)[:length]):
            out[row, col] = ids.setdefault(token, len(ids))
    return out


def hamming_gram(encoded: npt.NDArray[np.int64], prompts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The kernel matrix: shared positions with equal tokens over ``L``, zero across prompts."""
    equal = (encoded[:, None, :] == encoded[None, :, :]) & (encoded[:, None, :] >= 0)
    gram = equal.mean(axis=2)
    return np.where(prompts[:, None] == prompts[None, :], gram, 0.0)


def mmd2(gram: npt.NDArray[np.float64], is_a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Unbiased MMD^2 between the samples marked True and the rest, one value per row of ``is_a``.

    Quadratic forms in the label indicators, so thousands of permutations cost one matrix product.
    """
    w = np.atleast_2d(np.asarray(is_a, dtype=np.float64))
    v = 1.0 - w
    n, m = w.sum(axis=1), v.sum(axis=1)
    diagonal = np.diag(gram)
    kw, kv = w @ gram, v @ gram
    within_a = ((kw * w).sum(axis=1) - w @ diagonal) / np.maximum(n * (n - 1), 1.0)
    within_b = ((kv * v).sum(axis=1) - v @ diagonal) / np.maximum(m * (m - 1), 1.0)
    across = (kw * v).sum(axis=1) / np.maximum(n * m, 1.0)
    return np.asarray(within_a + within_b - 2.0 * across, dtype=np.float64)


@dataclass(frozen=True)
class MMDResult:
    statistic: float  # MMD^2, unbiased
    p_value: float
    null_quantile: float  # the permutation null's 1 - alpha quantile, for scale
    n_a: int
    n_b: int


def mmd_test(
    a: Sequence[tuple[int, str]],
    b: Sequence[tuple[int, str]],
    rng: np.random.Generator,
    *,
    permutations: int = 4000,
    alpha: float = 0.001,
    length: int = TOKENS,
) -> MMDResult:
    """MMD two-sample test of (prompt index, completion) samples ``a`` against ``b``.

    1. Encode every completion's first ``length`` tokens; build the kernel matrix once.
    2. The observed MMD^2 with the true labels.
    3. ``permutations`` times, shuffle the labels within each prompt and recompute (in blocks,
       as matrix products).
    4. The p-value counts the permuted statistics at least as large, plus one: it can go no
       lower than ``1 / (1 + permutations)``, so test at ``alpha`` with at least ``1 / alpha``.
    """
    samples = [*a, *b]
    prompts = np.array([p for p, _ in samples], dtype=np.int64)
    gram = hamming_gram(encode([t for _, t in samples], length), prompts)
    is_a = np.zeros(len(samples), dtype=bool)
    is_a[: len(a)] = True
    observed = float(mmd2(gram, is_a)[0])
    strata = [np.flatnonzero(prompts == p) for p in np.unique(prompts)]
    null = np.empty(permutations)
    for start in range(0, permutations, _CHUNK):
        count = min(_CHUNK, permutations - start)
        labels = np.repeat(is_a[None, :], count, axis=0)
        for members in strata:
            labels[:, members] = rng.permuted(labels[:, members], axis=1)
        null[start : start + count] = mmd2(gram, labels)
    p_value = (1.0 + float(np.sum(null >= observed - 1e-12))) / (1.0 + permutations)
    quantile = float(np.quantile(null, 1.0 - alpha)) if permutations else float("nan")
    return MMDResult(observed, p_value, quantile, len(a), len(b))
