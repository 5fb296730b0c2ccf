"""The MMD test's fast path against known values, and its level by simulation (fixed seeds, MC error)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from canary.stats.mmd import encode, hamming_gram, mmd2, mmd_test

WORDS = ["a", "b", "c", "d"]
SAME = [0.4, 0.3, 0.2, 0.1]


def _samples(
    rng: np.random.Generator, weights: list[float], n: int, prompts: int = 3
) -> list[tuple[int, str]]:
    return [
        (prompt, " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8)), p=weights)))
        for prompt in range(prompts)
        for _ in range(n)
    ]


def test_the_per_prompt_statistic_is_mmd2_on_the_whole_kernel_matrix() -> None:
    rng = np.random.default_rng(11)
    a, b = _samples(rng, SAME, 7), _samples(rng, [0.1, 0.2, 0.3, 0.4], 5)
    samples = [*a, *b]
    gram = hamming_gram(encode([t for _, t in samples]), np.array([p for p, _ in samples]))
    expected = mmd2(gram, np.arange(len(samples)) < len(a))[0]
    assert mmd_test(a, b, rng, permutations=10).statistic == pytest.approx(expected, abs=1e-12)


def test_the_p_value_matches_the_exact_permutation_distribution() -> None:
    """Two prompts, three samples a side each: all 20 x 20 within-prompt relabellings, enumerated."""
    a = [(0, "a b c"), (0, "a b d"), (0, "a c c"), (1, "x y"), (1, "x y"), (1, "x z")]
    b = [(0, "b b c"), (0, "d b d"), (0, "a b c"), (1, "z y"), (1, "x x"), (1, "y z")]
    samples = [*a, *b]
    gram = hamming_gram(encode([t for _, t in samples]), np.array([p for p, _ in samples]))
    rows = {0: [0, 1, 2, 6, 7, 8], 1: [3, 4, 5, 9, 10, 11]}
    labels = []
    choices = [itertools.combinations(rows[p], 3) for p in (0, 1)]
    for left, right in itertools.product(*choices):
        w = np.zeros(len(samples), dtype=bool)
        w[[*left, *right]] = True
        labels.append(w)
    null = mmd2(gram, np.array(labels))
    observed = mmd2(gram, np.arange(len(samples)) < len(a))[0]
    exact = float(np.mean(null >= observed - 1e-12))
    permutations = 20_000
    result = mmd_test(a, b, np.random.default_rng(12), permutations=permutations, sequential=False)
    mc_error = math.sqrt(exact * (1 - exact) / permutations)
    assert abs(result.p_value - exact) < 4 * mc_error + 1 / permutations, (result.p_value, exact)
    assert result.permutations == permutations


def test_the_sequential_test_decides_as_the_full_permutation_test() -> None:
    """Same permutations drawn in the same order: stopping early never changes the decision at alpha."""
    alpha, decisions, drawn = 0.01, 0, []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        shift = (SAME, [0.3, 0.3, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4])[seed % 3]
        a, b = _samples(rng, SAME, 8), _samples(rng, shift, 8)
        full, fast = (
            mmd_test(a, b, np.random.default_rng([seed, 1]), permutations=500, alpha=alpha, sequential=s)
            for s in (False, True)
        )
        assert (fast.p_value < alpha) == (full.p_value < alpha)
        assert fast.permutations == full.permutations or fast.p_value > alpha  # stopped: no rejection
        decisions += full.p_value < alpha
        drawn.append(fast.permutations)
    assert 10 < decisions < 50  # both outcomes were exercised
    assert np.median(drawn[::3]) < 100  # samples that look alike stop after a few dozen permutations


def test_under_the_null_the_sequential_test_rejects_at_most_alpha() -> None:
    rng = np.random.default_rng(13)
    alpha, sims = 0.05, 1000
    rejected = sum(
        mmd_test(_samples(rng, SAME, 6), _samples(rng, SAME, 6), rng, permutations=200, alpha=alpha).p_value
        <= alpha
        for _ in range(sims)
    )
    rate, mc_error = rejected / sims, math.sqrt(alpha * (1 - alpha) / sims)
    assert rate <= alpha + 3 * mc_error, f"rejection rate {rate:.4f} ± {mc_error:.4f}"


def test_a_shifted_distribution_draws_every_permutation_and_gets_the_smallest_p_value() -> None:
    rng = np.random.default_rng(14)
    a, b = _samples(rng, SAME, 30), _samples(rng, [0.1, 0.2, 0.3, 0.4], 30)
    result = mmd_test(a, b, rng, permutations=1999)
    assert result.p_value == pytest.approx(1 / 2000) and result.permutations == 1999
    assert result.statistic > result.null_quantile
