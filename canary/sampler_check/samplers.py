"""The sampler contract, the reference sampler, and deliberately defective samplers.

A *sampler* turns one decoding step's logits into token ids. Every sampler canary checks (the
reference fleet's, a serving stack's, the ones below) has the signature of :class:`Sampler`,
so ``canary sampler-check --sampler module:function`` can load any of them by import path.

The reference sampler is exact: top-k keeps every token tied with the k-th largest logit, top-p
keeps the smallest top set of tokens whose mass reaches p (ties at the boundary kept), selection
runs on the fp32 logits themselves (never on temperature-scaled or bf16-rounded copies), and
sampling is by inverse CDF over the kept set. It avoids a full-vocabulary sort, which costs
seconds per call on CPU at 256k vocabularies: top-p is a 32-step bisection over the fp32 total
order of the logits.

The defective samplers reproduce, on purpose, the three ways the postmortem's sampler broke;
they exist to prove that each invariant of the check catches its defect (``DEFECTS`` maps each
to the invariant meant to catch it). Never serve them.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
from jax import lax


class Sampler(Protocol):
    """One decoding step: logits to token ids, optionally with the set the filter kept.

    Arguments:
        logits: ``[batch, vocab]`` fp32 or bf16.
        key: a ``jax.random`` key; rows must draw independent randomness.
        temperature: ``[batch]`` float32; 0 means greedy (return an argmax).
        top_p: ``[batch]`` float32 in (0, 1]; 1.0 turns top-p off.
        top_k: static Python int; 0 turns top-k off.

    Returns int32 token ids ``[batch]``, or ``(tokens, kept)`` where ``kept`` is a bool
    ``[batch, vocab]`` mask of the tokens the top-k / top-p filter kept. Returning ``kept`` lets
    the check test the filter directly; without it only tokens and frequencies are checked.
    """

    def __call__(
        self, logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
    ) -> jax.Array | tuple[jax.Array, jax.Array]: ...


def order_keys(x: jax.Array) -> jax.Array:
    """Map fp32 values to uint32 keys with the same total order (-inf lowest, +inf highest)."""
    x = jnp.where(x == 0, 0.0, x)  # -0.0 == 0.0 as logits; one key keeps them on one side of a cut
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def top_k_mask(x: jax.Array, top_k: int) -> jax.Array:
    """Keep every token whose logit is at least the k-th largest (ties at the boundary kept)."""
    if top_k <= 0 or top_k >= x.shape[-1]:
        return jnp.ones(x.shape, dtype=bool)
    kth = lax.top_k(x, top_k)[0][:, -1:]
    return x >= kth


def top_p_mask(x: jax.Array, probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep the smallest top set of tokens (by logit) whose probability mass reaches ``top_p``.

    Finds, per row, the largest threshold key ``t`` with ``mass(keys >= t) >= top_p`` by
    bisection over the 2**32 fp32 order keys: exact, 32 masked sums, no sort. Ties with the
    boundary token are kept, as with top-k.
    """
    keys = order_keys(x)
    rows = x.shape[0]
    target = top_p[:, None] if top_p.ndim == 1 else top_p

    def step(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds
        mid = lo + (hi - lo) // 2 + (hi - lo) % 2
        mass = jnp.sum(jnp.where(keys >= mid[:, None], probs, 0.0), axis=-1, keepdims=True)
        ok = (mass >= target)[:, 0]
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    # lo = 0 keeps everything, whose mass is 1 >= p; the loop keeps that invariant.
    lo = jnp.zeros((rows,), jnp.uint32)
    hi = jnp.full((rows,), 0xFFFFFFFF, jnp.uint32)
    lo, _ = lax.fori_loop(0, 32, step, (lo, hi))
    kept: jax.Array = (keys >= lo[:, None]) | (target >= 1.0)
    return kept


def inverse_cdf_sample(key: jax.Array, probs: jax.Array, kept: jax.Array) -> jax.Array:
    """Draw one token per row from ``probs`` restricted to ``kept``, with one uniform per row.

    Cheaper on CPU than Gumbel-max (one random number per row, not per token); only tokens with
    positive kept probability can be drawn.
    """
    weights = jnp.where(kept, probs, 0.0)
    cdf = jnp.cumsum(weights, axis=-1)
    u = jax.random.uniform(key, (probs.shape[0], 1), dtype=jnp.float32) * cdf[:, -1:]
    drawn = jnp.sum(cdf <= u, axis=-1)
    # Rounding can put u at the very top of the cdf; fall back to the last drawable token.
    vocab = probs.shape[-1]
    last = vocab - 1 - jnp.argmax(jnp.flip(weights > 0, axis=-1), axis=-1)
    return jnp.minimum(drawn, last).astype(jnp.int32)


def scaled_logits(x: jax.Array, kept: jax.Array, temperature: jax.Array) -> jax.Array:
    """``(x - max) / T`` over the kept tokens, ``-inf`` elsewhere (T = 1 for greedy rows).

    Subtracting the max *before* dividing keeps the differences exact: at logits near 1e4,
    ``x / T`` alone rounds each logit by ~0.004 and moves probabilities by ~0.4 %, enough to
    cut a token the top-p set needs.
    """
    t = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    top = jnp.max(jnp.where(kept, x, -jnp.inf), axis=-1, keepdims=True)
    return jnp.where(kept, (x - top) / t, -jnp.inf)


def _finish(
    x: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    kept_k: jax.Array,
    greedy: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Temperature, top-p over the top-k set, sampling, and the greedy switch (shared tail)."""
    probs = jax.nn.softmax(scaled_logits(x, kept_k, temperature), axis=-1)
    kept = kept_k & top_p_mask(x, probs, top_p)
    sampled = inverse_cdf_sample(key, probs, kept)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32), kept


def reference_sample(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k + top-p sampling in fp32; the sampler every other one is held to."""
    x = logits.astype(jnp.float32)  # exact for bf16 input: selection never sees a rounded copy
    greedy = jnp.argmax(x, axis=-1)
    return _finish(x, key, temperature, top_p, top_k_mask(x, top_k), greedy)


APPROX_TILE = 128


def approx_topk_sample(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """DEFECTIVE: an approximate top-k that loses the argmax at some batch sizes.

    Emulates a miscompiled tiled reduction: when the batch size is a multiple of 8 the top-k
    skips the last lane of every 128-lane tile, so a maximum sitting there is dropped from the
    kept set (and greedy decoding, which takes the argmax of the filtered logits, misses it).
    """
    x = logits.astype(jnp.float32)
    if 0 < top_k < x.shape[-1]:
        lanes = jnp.arange(x.shape[-1]) % APPROX_TILE
        skipped = (lanes == APPROX_TILE - 1) if x.shape[0] % 8 == 0 else jnp.zeros_like(lanes, bool)
        _, idx = lax.top_k(jnp.where(skipped, -jnp.inf, x), top_k)
        kept_k = jnp.zeros(x.shape, bool).at[jnp.arange(x.shape[0])[:, None], idx].set(True)
    else:
        kept_k = jnp.ones(x.shape, dtype=bool)
    greedy = jnp.argmax(jnp.where(kept_k, x, -jnp.inf), axis=-1)
    return _finish(x, key, temperature, top_p, kept_k, greedy)


def bf16_argmax_sample(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """DEFECTIVE: greedy argmax taken in bf16 while the filter runs in fp32.

    fp32 logits that differ by less than a bf16 ulp collapse to a tie in bf16, and the bf16
    argmax returns the first of them, which need not be the fp32 argmax.
    """
    x = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits.astype(jnp.bfloat16), axis=-1)
    return _finish(x, key, temperature, top_p, top_k_mask(x, top_k), greedy)


RENORM_WINDOW = 64


def renormalised_top_p_sample(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """DEFECTIVE: a top-p that renormalises over a 64-candidate window before filtering.

    A common speed-up: take the 64 most probable candidates, renormalise them to sum to 1, then
    apply top-p. With top-k ≤ 64 it is exact; with top-k off or larger and a flat distribution
    the kept set's true mass falls far short of p.
    """
    x = logits.astype(jnp.float32)
    kept_k = top_k_mask(x, top_k)
    t = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    window = min(RENORM_WINDOW, x.shape[-1])
    vals, idx = lax.top_k(jnp.where(kept_k, x, -jnp.inf), window)
    # The defect: renormalising over the window forgets the mass outside it.
    wprobs = jax.nn.softmax((vals - vals[:, :1]) / t, axis=-1)
    before = jnp.cumsum(wprobs, axis=-1) - wprobs
    rows = jnp.arange(x.shape[0])[:, None]
    in_p = jnp.zeros(x.shape, bool).at[rows, idx].set(before < top_p[:, None])
    kept = kept_k & (in_p | (top_p[:, None] >= 1.0))
    probs = jax.nn.softmax(scaled_logits(x, kept_k, temperature), axis=-1)
    sampled = inverse_cdf_sample(key, probs, kept)
    greedy = jnp.argmax(x, axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32), kept


# Each defective sampler and the invariant meant to catch it (see canary.sampler_check.reference).
DEFECTS: dict[str, tuple[Sampler, str]] = {
    "approx_topk": (approx_topk_sample, "argmax_kept"),
    "bf16_argmax": (bf16_argmax_sample, "greedy_argmax"),
    "renormalised_top_p": (renormalised_top_p_sample, "top_p_mass"),
}
