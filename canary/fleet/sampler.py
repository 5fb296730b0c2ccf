"""The fleet's JAX sampler: temperature, top-k, top-p, and the faulty approximate top-k.

:func:`sample` has the signature the sampler check (``canary sampler-check``) expects::

    sample(logits, key, temperature, top_p, *, top_k) -> (tokens, kept)

``logits`` is ``[batch, vocab]`` in fp32 or bf16, ``temperature`` and ``top_p`` are fp32
``[batch]`` (temperature 0 means greedy, top_p 1.0 means off), ``top_k`` is a static int (0 means
off). It returns int32 token ids and the boolean mask of tokens the filters kept.

bf16 logits are upcast and every selection runs in fp32: on CPU, ``lax.top_k`` over bf16 is two
orders of magnitude slower than over fp32, and bf16 pools are emulated by rounding the logits
to bf16 before they get here, which is where real bf16 serving loses its precision.

:func:`sample_approx_topk` is the defect of the postmortem's bug 3: an approximate top-k that,
for some batch sizes, loses the highest-probability token. It emulates the effect (the argmax
leaves the kept set, so greedy decoding picks the runner-up), not the compiler's mechanism.
The fleet's engine uses :func:`fleet_step`, the same code with a per-row drop rate and a seed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

APPROX_TOPK_BAD_BATCH_SIZES = frozenset({1, 3, 4, 8, 16})
"""Batch sizes at which :func:`sample_approx_topk` drops the argmax (others are exact)."""
APPROX_TOPK_DROP_RATE = 0.5
"""Per-row chance, at an affected batch size, that the argmax is dropped."""
NUCLEUS_CANDIDATES = 64
"""Top-p is first tried over this many of the most probable kept tokens."""


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k`` behind an optimisation barrier.

    Without the barrier XLA:CPU fuses the consumers into the top-k and falls back to a full
    sort, which made a greedy step about 150 times slower (0.9 ms instead of 6 us a row).
    """
    values, indices = jax.lax.optimization_barrier(jax.lax.top_k(x, k))  # type: ignore[no-untyped-call]
    return values, indices


def _nucleus_cutoff(desc: jax.Array, log_z: jax.Array, top_p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The smallest logit inside each row's nucleus, from logits sorted descending.

    A token is inside when the mass before it is below ``top_p``. Also returns whether the
    nucleus closed within ``desc`` (always, for the full vocabulary).
    """
    probs = jnp.exp(desc - log_z)
    before = jnp.cumsum(probs, axis=-1) - probs
    inside = before < top_p[:, None]
    count = jnp.sum(inside, axis=-1)
    reached = jnp.sum(probs * inside, axis=-1) >= top_p
    cutoff = jnp.take_along_axis(desc, jnp.maximum(count - 1, 0)[:, None], axis=-1)
    return cutoff, reached | (count < desc.shape[-1])


def best_kept(final: jax.Array) -> jax.Array:
    """Index of the largest kept logit in each row."""
    return jnp.argmax(final, axis=-1)


def _filter_and_pick(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    drop_rate: jax.Array,
    top_k: int,
) -> tuple[jax.Array, jax.Array]:
    """Shared body: temperature, top-k, (faulty) argmax drop, top-p, then pick.

    1. Scale by temperature (greedy rows are scaled by 1; only their argmax matters).
    2. Keep the ``top_k`` best (all when 0); ties with the k-th value are kept.
    3. With probability ``drop_rate`` per row, remove the argmax from the kept set (the fault).
    4. Keep the smallest prefix of the remaining tokens, by probability, reaching ``top_p``.
    5. Greedy rows take the best kept token; the others sample among the kept tokens.
    """
    batch, vocab = logits.shape
    x = logits.astype(jnp.float32)
    greedy = temperature <= 0.0
    # Subtract the row's maximum before dividing: with logits near 1e4, x / 0.25 in fp32 would
    # lose the small differences that decide the nucleus.
    x = x - jnp.max(x, axis=-1, keepdims=True)
    scaled = x / jnp.where(greedy, 1.0, temperature)[:, None]
    drop_key, pick_key = jax.random.split(key)

    kept = jnp.ones((batch, vocab), dtype=jnp.bool_)
    if top_k > 0 and top_k < vocab:
        kth = _top_k(scaled, top_k)[0][:, -1:]
        kept = scaled >= kth
    best = jnp.argmax(scaled, axis=-1)
    dropped = jax.random.uniform(drop_key, (batch,)) < drop_rate
    is_best = jnp.arange(vocab)[None, :] == best[:, None]
    kept = kept & ~(is_best & dropped[:, None])

    # Top-p: the nucleus is every kept token at or above a cutoff logit. The cutoff is found
    # among the best NUCLEUS_CANDIDATES tokens (lax.top_k over fp32 is cheap on CPU); only when
    # some row's nucleus is larger than that does the step pay for a sort of the vocabulary.
    masked = jnp.where(kept, scaled, -jnp.inf)
    log_z = jax.nn.logsumexp(masked, axis=-1, keepdims=True)
    cand = _top_k(masked, min(NUCLEUS_CANDIDATES, vocab))[0]
    cutoff, reached = _nucleus_cutoff(cand, log_z, top_p)
    cutoff = jax.lax.cond(
        jnp.all(reached | (top_p >= 1.0)),
        lambda: cutoff,
        lambda: _nucleus_cutoff(-jnp.sort(-masked, axis=-1), log_z, top_p)[0],
    )
    kept = kept & ((masked >= cutoff) | (top_p >= 1.0)[:, None])

    # Inverse-CDF sampling: one uniform per row instead of a Gumbel per vocabulary entry, which
    # is what dominates jax.random.categorical's cost on CPU.
    final = jnp.where(kept, scaled, -jnp.inf)
    probs = jax.nn.softmax(final, axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)
    u = jax.random.uniform(pick_key, (batch, 1)) * cdf[:, -1:]
    picked = jnp.minimum(jnp.sum(cdf <= u, axis=-1), vocab - 1)
    # Rounding in the cumulative sum could land on a token outside the kept set; never return one.
    picked = jnp.where(jnp.take_along_axis(kept, picked[:, None], axis=-1)[:, 0], picked, best_kept(final))
    tokens = jnp.where(greedy, best_kept(final), picked).astype(jnp.int32)
    return tokens, kept


@partial(jax.jit, static_argnames=("top_k",))
def sample(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """The healthy sampler: exact top-k and top-p in fp32."""
    no_drop = jnp.zeros(logits.shape[:1], dtype=jnp.float32)
    return _filter_and_pick(logits, key, temperature, top_p, no_drop, top_k)


@partial(jax.jit, static_argnames=("top_k",))
def sample_approx_topk(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int
) -> tuple[jax.Array, jax.Array]:
    """The faulty sampler: at the batch sizes in :data:`APPROX_TOPK_BAD_BATCH_SIZES` it loses the argmax.

    The batch size is a static shape, so whether a batch is affected is decided at trace time,
    exactly as a miscompile for some shapes would be.
    """
    rate = APPROX_TOPK_DROP_RATE if logits.shape[0] in APPROX_TOPK_BAD_BATCH_SIZES else 0.0
    drop = jnp.full(logits.shape[:1], rate, dtype=jnp.float32)
    return _filter_and_pick(logits, key, temperature, top_p, drop, top_k)


@partial(jax.jit, static_argnames=("top_k",))
def fleet_step(
    logits: jax.Array,
    seed: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    drop_rate: jax.Array,
    *,
    top_k: int,
) -> jax.Array:
    """One decoding step for a padded batch, as the engine calls it: one dispatch per step.

    The key is made from ``seed`` inside the compiled function so that a step costs a single
    dispatch; ``drop_rate`` is zero on healthy rows and the fault's intensity on affected ones.
    """
    key = jax.random.key(seed)

    def greedy_only() -> jax.Array:
        # Most canary probes run at temperature 0: the two best tokens settle every row, and
        # skipping the filters and the draw makes such a step several times cheaper.
        top2 = _top_k(logits.astype(jnp.float32), 2)[1]
        dropped = jax.random.uniform(key, logits.shape[:1]) < drop_rate
        return jnp.where(dropped, top2[:, 1], top2[:, 0]).astype(jnp.int32)

    def general() -> jax.Array:
        return _filter_and_pick(logits, key, temperature, top_p, drop_rate, top_k)[0]

    tokens: jax.Array = jax.lax.cond(jnp.all(temperature <= 0.0), greedy_only, general)
    return tokens
