"""The reference sampler's building blocks, the adversarial inputs, and each defect in isolation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from canary.sampler_check.inputs import KINDS, make_row, round_to_bf16
from canary.sampler_check.samplers import (
    approx_topk_sample,
    bf16_argmax_sample,
    inverse_cdf_sample,
    order_keys,
    reference_sample,
    renormalised_top_p_sample,
    top_k_mask,
    top_p_mask,
)

jax.config.update("jax_enable_x64", False)  # the sampler runs in fp32, as it is served


_top_p_mask = jax.jit(top_p_mask)


def call(sampler, rows: np.ndarray, temperature: float, top_p: float, top_k: int, dtype=jnp.float32):  # type: ignore[no-untyped-def]
    """Run a sampler jit-compiled (eager fori_loops cost seconds) and return NumPy outputs."""
    b = rows.shape[0]
    out = jax.jit(sampler, static_argnames=("top_k",))(
        jnp.asarray(rows).astype(dtype),
        jax.random.key(0),
        jnp.full((b,), temperature, jnp.float32),
        jnp.full((b,), top_p, jnp.float32),
        top_k=top_k,
    )
    return np.asarray(out[0]), np.asarray(out[1])


def exact_top_p(row: np.ndarray, p: float) -> np.ndarray:
    """Sort-based float64 top-p with ties at the boundary kept."""
    x = row.astype(np.float64)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    order = np.argsort(-x, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    last = order[np.count_nonzero(before < p) - 1]
    return x >= x[last]


def test_order_keys_preserve_the_float_order_and_merge_signed_zeros() -> None:
    values = np.array([-np.inf, -1e30, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, 3e38, np.inf], np.float32)
    keys = np.asarray(order_keys(jnp.asarray(values)))
    assert np.all(np.diff(keys[[0, 1, 2, 3, 5, 6, 7, 8, 9]].astype(np.int64)) > 0)
    assert keys[4] == keys[5]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.floats(0.05, 0.999), scale=st.sampled_from([0.01, 1.0, 4.0]))
def test_bisection_top_p_equals_the_sorted_float64_nucleus(seed: int, p: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((4, 300)) * scale).astype(np.float32)
    rows[1, :10] = rows[1].max()  # ties at the max
    probs = jax.nn.softmax(jnp.asarray(rows), axis=-1)
    kept = np.asarray(_top_p_mask(jnp.asarray(rows), probs, jnp.full((4,), p, jnp.float32)))
    for r in range(4):
        want = exact_top_p(rows[r], p)
        # fp32 mass sums may move the cut by a token only when its boundary is within rounding of p.
        assert kept[r].sum() == want.sum() or abs(int(kept[r].sum()) - int(want.sum())) <= 1


def test_top_k_keeps_every_token_tied_with_the_kth() -> None:
    row = np.array([[5.0, 3.0, 3.0, 3.0, 1.0]], np.float32)
    assert np.asarray(top_k_mask(jnp.asarray(row), 2)).tolist() == [[True, True, True, True, False]]
    assert np.asarray(top_k_mask(jnp.asarray(row), 0)).all()


def test_inverse_cdf_draws_only_kept_tokens() -> None:
    probs = jnp.full((256, 8), 1 / 8, jnp.float32)
    kept = jnp.zeros((256, 8), bool).at[:, 5].set(True).at[:, 2].set(True)
    tokens = np.asarray(inverse_cdf_sample(jax.random.key(3), probs, kept))
    assert set(tokens.tolist()) == {2, 5}


def test_reference_greedy_is_the_exact_argmax_for_one_ulp_near_ties() -> None:
    row = make_row("near_tie", 1024, 7, "fp32")
    tokens, kept = call(reference_sample, row[None], 0.0, 1.0, 50)
    assert row[tokens[0]] == row.max()
    tokens, kept = call(reference_sample, row[None], 1.0, 0.001, 0)
    assert kept[0].sum() == 1 and kept[0, int(np.argmax(row))]


def test_round_to_bf16_matches_jax_rounding() -> None:
    rng = np.random.default_rng(0)
    special = np.array([0, -0.0, 1e30, -1e30, np.inf, -np.inf], np.float32)
    values = np.concatenate([rng.standard_normal(4096).astype(np.float32) * 100, special])
    want = np.asarray(jnp.asarray(values).astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(round_to_bf16(values), want)


def test_every_input_kind_is_reproducible_from_its_seed() -> None:
    for kind in KINDS:
        a, b = make_row(kind, 512, 11, "bf16"), make_row(kind, 512, 11, "bf16")
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a.max()), kind


def test_bf16_collide_rows_differ_in_fp32_and_tie_in_bf16() -> None:
    fp32 = make_row("bf16_collide", 1024, 5, "fp32")
    low, high = np.flatnonzero(fp32 >= 8.0)
    assert fp32[high] > fp32[low]
    assert round_to_bf16(fp32)[low] == round_to_bf16(fp32)[high]


def test_approx_topk_drops_a_last_lane_argmax_at_batch_8_only() -> None:
    row = make_row("argmax_last", 1024, 1, "fp32")
    for batch, dropped in ((7, False), (8, True)):
        tokens, kept = call(approx_topk_sample, np.stack([row] * batch), 0.0, 1.0, 50)
        assert (not kept[0, -1]) == dropped
        assert (tokens[0] != 1023) == dropped


def test_bf16_argmax_returns_the_first_of_values_that_collide_in_bf16() -> None:
    row = make_row("bf16_collide", 1024, 5, "fp32")
    low, high = np.flatnonzero(row >= 8.0)
    assert call(bf16_argmax_sample, row[None], 0.0, 1.0, 0)[0][0] == low
    assert call(reference_sample, row[None], 0.0, 1.0, 0)[0][0] == high


def test_renormalised_top_p_keeps_too_little_mass_with_top_k_off() -> None:
    row = make_row("flat", 1024, 2, "fp32")
    _, kept = call(renormalised_top_p_sample, row[None], 1.0, 0.9, 0)
    assert kept[0].sum() < 0.1 * 1024  # a flat row's 0.9 nucleus holds ~920 tokens
    _, exact = call(renormalised_top_p_sample, row[None], 1.0, 0.9, 50)
    _, want = call(reference_sample, row[None], 1.0, 0.9, 50)
    np.testing.assert_array_equal(exact, want)  # within a top-k of at most 64 it is exact
