"""The exact float64 NumPy reference and the per-row invariants of the sampler check.

Pure functions of arrays (NumPy + scipy, no JAX, no I/O). The invariants:

- ``greedy_argmax``: at temperature 0 the token's logit equals the row's maximum.
- ``argmax_kept``: a most probable token is kept, and none is dropped while a less probable
  token is kept (a tie at the max may be thinned only when the kept set is all maxima).
- ``top_p_mass``: the kept set's exact mass (after temperature and top-k) reaches p, within
  ``MASS_TOLERANCE`` for fp32 accumulation.
- ``token_kept``: a sampled token has positive reference probability, lies in the top-k set,
  and in the sampler's own kept set when it returns one.
- ``chi_square``: sampled frequencies match the reference distribution (see ``chi_square_test``).
- ``batch_invariance``: greedy tokens and kept sets do not depend on batch size or position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

INVARIANTS: tuple[str, ...] = (
    "greedy_argmax",
    "argmax_kept",
    "top_p_mass",
    "token_kept",
    "chi_square",
    "batch_invariance",
)

# fp32 sums of up to 256k probabilities err by ~1e-6; the defects we hunt lose 1e-2 or more.
MASS_TOLERANCE = 1e-4
# Pool tokens into chi-square bins until each bin expects at least this many draws.
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class ReferenceBatch:
    """Exact quantities for a batch of logits rows (float64)."""

    is_max: np.ndarray  # [B, V] bool: the row's most probable tokens
    in_top_k: np.ndarray  # [B, V] bool: kept by exact top-k (ties kept)
    probs: np.ndarray  # [B, V] float64: softmax(x / T) over the top-k set (T = 1 for greedy rows)


def reference_batch(logits: np.ndarray, temperature: np.ndarray, top_k: int) -> ReferenceBatch:
    """Compute the exact maxima, top-k set and post-top-k distribution of every row."""
    x = np.asarray(logits, dtype=np.float64)
    vocab = x.shape[-1]
    row_max = x.max(axis=-1, keepdims=True)
    if 0 < top_k < vocab:
        kth = np.partition(x, vocab - top_k, axis=-1)[:, vocab - top_k : vocab - top_k + 1]
        in_top_k = x >= kth
    else:
        in_top_k = np.ones(x.shape, dtype=bool)
    t = np.where(temperature > 0, temperature, 1.0).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.where(in_top_k, (x - row_max) / t, -np.inf)
    weights = np.exp(z)
    probs = weights / weights.sum(axis=-1, keepdims=True)
    return ReferenceBatch(is_max=x == row_max, in_top_k=in_top_k, probs=probs)


def row_violations(
    ref: ReferenceBatch,
    tokens: np.ndarray,
    kept: np.ndarray | None,
    temperature: np.ndarray,
    top_p: np.ndarray,
) -> dict[str, np.ndarray]:
    """Return, per row-level invariant, a bool ``[B]`` array marking the violating rows."""
    rows = np.arange(tokens.shape[0])
    tok = np.clip(tokens.astype(np.int64), 0, ref.probs.shape[-1] - 1)
    in_range = (tokens >= 0) & (tokens < ref.probs.shape[-1])
    greedy = temperature <= 0
    out = {"greedy_argmax": greedy & ~(in_range & ref.is_max[rows, tok])}
    token_ok = in_range & ref.in_top_k[rows, tok] & (ref.probs[rows, tok] > 0)
    if kept is not None:
        token_ok &= kept[rows, tok]
        kept_max = (kept & ref.is_max).any(axis=-1)
        thinned = (ref.is_max & ~kept).any(axis=-1) & (kept & ~ref.is_max).any(axis=-1)
        out["argmax_kept"] = ~greedy & (~kept_max | thinned)
        mass = np.where(kept & ref.in_top_k, ref.probs, 0.0).sum(axis=-1)
        out["top_p_mass"] = ~greedy & (top_p < 1.0) & (mass < top_p - MASS_TOLERANCE)
    out["token_kept"] = ~greedy & ~token_ok
    return out


def kept_sets_differ(
    logits: np.ndarray, ref: ReferenceBatch, a: np.ndarray, b: np.ndarray, top_p: np.ndarray
) -> np.ndarray:
    """Per row, whether kept sets ``a`` and ``b`` differ by more than fp32 rounding allows.

    Two runs of one fp32 sampler may legitimately disagree on a token at the top-p boundary
    whose exact mass before it is within ``MASS_TOLERANCE`` of p: reduction order changes with
    batch shape. Any other difference (the argmax, a token far inside or outside the nucleus,
    a top-k member) is a real dependence on the batch.
    """
    x = np.asarray(logits, dtype=np.float64)
    out: np.ndarray = (a != b).any(axis=-1)
    for r in np.flatnonzero(out):
        diff = np.flatnonzero(a[r] != b[r])
        if diff.size > 64 or top_p[r] >= 1.0 or not ref.in_top_k[r, diff].all():
            continue
        before = np.array([ref.probs[r][x[r] > x[r, d]].sum() for d in diff])
        out[r] = bool((np.abs(before - top_p[r]) > MASS_TOLERANCE).any())
    return out


def reference_distribution(logits: np.ndarray, temperature: float, top_p: float, top_k: int) -> np.ndarray:
    """The exact sampling distribution of one row after temperature, top-k and top-p."""
    x = np.asarray(logits, dtype=np.float64)[None, :]
    probs: np.ndarray = reference_batch(x, np.array([temperature]), top_k).probs[0]
    if top_p >= 1.0:
        return probs
    order = np.argsort(-x[0], kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    last = order[int(np.count_nonzero(before < top_p)) - 1]
    keep = (x[0] >= x[0, last]) & (probs > 0)  # ties with the boundary token are kept
    dist: np.ndarray = np.where(keep, probs, 0.0)
    normalised: np.ndarray = dist / dist.sum()
    return normalised


@dataclass(frozen=True)
class ChiSquareResult:
    """A goodness-of-fit test of sampled counts against a reference distribution."""

    statistic: float
    dof: int
    p_value: float
    outside_support: int  # draws of tokens the reference gives probability 0


def chi_square_test(counts: np.ndarray, expected: np.ndarray) -> ChiSquareResult:
    """Pearson chi-square of ``counts`` against ``expected`` probabilities, with pooled bins.

    Tokens are taken in decreasing expected probability and pooled until each bin expects at
    least ``MIN_EXPECTED`` draws (a remainder joins the last bin), so the chi-square
    approximation holds even for flat distributions over large vocabularies. A draw outside the
    reference support is reported separately and makes the p-value 0.
    """
    n = int(counts.sum())
    support = expected > 0
    outside = int(counts[~support].sum())
    order = np.argsort(-expected[support], kind="stable")
    exp_sorted = expected[support][order] * n
    obs_sorted = counts[support][order].astype(np.float64)
    bins_exp: list[float] = []
    bins_obs: list[float] = []
    acc_e = acc_o = 0.0
    for e, o in zip(exp_sorted, obs_sorted, strict=True):
        acc_e += e
        acc_o += o
        if acc_e >= MIN_EXPECTED:
            bins_exp.append(acc_e)
            bins_obs.append(acc_o)
            acc_e = acc_o = 0.0
    if bins_exp:
        bins_exp[-1] += acc_e
        bins_obs[-1] += acc_o
    if outside or len(bins_exp) < 2:
        return ChiSquareResult(0.0, max(len(bins_exp) - 1, 0), 0.0 if outside else 1.0, outside)
    f_exp = np.array(bins_exp)
    f_obs = np.array(bins_obs)
    f_exp *= f_obs.sum() / f_exp.sum()  # scipy requires equal totals; they differ only by rounding
    result = stats.chisquare(f_obs, f_exp)
    return ChiSquareResult(float(result.statistic), len(bins_exp) - 1, float(result.pvalue), 0)
