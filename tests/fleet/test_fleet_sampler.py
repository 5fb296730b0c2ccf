"""The fleet's JAX sampler: healthy by default, and the approximate top-k that loses the argmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from canary.fleet.sampler import (
    APPROX_TOPK_BAD_BATCH_SIZES,
    fleet_step,
    sample,
    sample_approx_topk,
)

VOCAB = 256


def logits(batch: int, seed: int = 0, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(0, 2, (batch, VOCAB)), dtype=dtype)


def params(batch: int, temperature: float, top_p: float = 1.0) -> tuple[jax.Array, jax.Array]:
    return jnp.full(batch, temperature, jnp.float32), jnp.full(batch, top_p, jnp.float32)


def test_greedy_picks_the_argmax_in_fp32_and_bf16() -> None:
    for dtype in (jnp.float32, jnp.bfloat16):
        x = logits(8, dtype=dtype)
        tokens, kept = sample(x, jax.random.key(0), *params(8, 0.0), top_k=0)
        assert tokens.dtype == jnp.int32 and kept.shape == (8, VOCAB)
        np.testing.assert_array_equal(
            np.asarray(tokens), np.asarray(jnp.argmax(x.astype(jnp.float32), axis=-1))
        )


def test_top_k_keeps_exactly_the_k_best_and_top_p_the_smallest_nucleus() -> None:
    x = logits(8, seed=1)
    _, kept = sample(x, jax.random.key(1), *params(8, 1.0), top_k=10)
    assert (np.asarray(kept).sum(axis=-1) == 10).all()
    _, kept = sample(x, jax.random.key(1), *params(8, 1.0, top_p=0.5), top_k=0)
    probs = np.asarray(jax.nn.softmax(x, axis=-1), dtype=np.float64)
    for row, mask in zip(probs, np.asarray(kept), strict=True):
        ordered = np.sort(row)[::-1]
        needed = int(np.searchsorted(np.cumsum(ordered), 0.5) + 1)
        assert mask.sum() == needed
        assert row[mask].min() >= ordered[needed - 1] - 1e-9


def test_sampled_tokens_follow_the_softmax_distribution() -> None:
    row = np.log(np.array([0.5, 0.3, 0.15, 0.05] + [1e-9] * (VOCAB - 4)))
    x = jnp.asarray(np.tile(row, (64, 1)), jnp.float32)
    draws = np.concatenate(
        [np.asarray(sample(x, jax.random.key(k), *params(64, 1.0), top_k=0)[0]) for k in range(40)]
    )
    frequencies = np.bincount(draws, minlength=4)[:4] / len(draws)
    np.testing.assert_allclose(frequencies, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_approximate_top_k_drops_the_argmax_only_at_its_bad_batch_sizes() -> None:
    bad = min(APPROX_TOPK_BAD_BATCH_SIZES)
    good = next(b for b in (2, 5, 6, 7) if b not in APPROX_TOPK_BAD_BATCH_SIZES)
    for batch, should_drop in ((bad, True), (good, False)):
        dropped = 0
        for k in range(30):
            x = logits(batch, seed=k)
            tokens, _ = sample_approx_topk(x, jax.random.key(k), *params(batch, 0.0), top_k=40)
            dropped += int((np.asarray(tokens) != np.asarray(jnp.argmax(x, axis=-1))).sum())
        assert (dropped > 0) == should_drop, (batch, dropped)


def test_fleet_step_picks_the_runner_up_when_the_argmax_is_dropped() -> None:
    x = np.asarray(logits(4, seed=3))
    zeros = np.zeros(4, np.float32)
    healthy = np.asarray(fleet_step(x, np.uint32(1), zeros, zeros + 1, zeros, top_k=0))
    faulty = np.asarray(fleet_step(x, np.uint32(1), zeros, zeros + 1, zeros + 1, top_k=0))
    np.testing.assert_array_equal(healthy, x.argmax(axis=-1))
    np.testing.assert_array_equal(faulty, np.argsort(-x, axis=-1)[:, 1])
