"""The equivalence statistics against known values and by simulation (fixed seeds, Monte Carlo error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from canary.stats.agreement import consensus, first_divergent_token, greedy_comparison
from canary.stats.equivalence import forced_comparison, peer_spread
from canary.stats.mmd import encode, hamming_gram, mmd2, mmd_test
from canary.stats.rates import cmh_test


def test_the_forced_p_value_is_scipys_one_sided_t_test_against_the_tolerance() -> None:
    rng = np.random.default_rng(1)
    peers = rng.normal(0.0, 0.001, (4, 300))
    cell = np.median(peers, axis=0) + rng.normal(0.0, 0.01, 300)
    result = forced_comparison(cell, peers)
    deviation = np.abs(cell - np.median(peers, axis=0))
    expected = sps.ttest_1samp(deviation - result.tolerance, 0.0, alternative="greater").pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert result.effect == pytest.approx(deviation.mean())
    assert result.ci_low < result.effect < result.ci_high
    assert result.verdict == "different" and result.n == 300


def test_peer_spread_is_the_median_leave_one_out_deviation() -> None:
    peers = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    # Peer 0 and 1: the others' median is 0.5 and 1.5 -> deviation 1.0; peer 2: 2.0.
    assert peer_spread(peers) == pytest.approx(1.0)
    assert peer_spread(peers[:1]) == 0.0


def test_healthy_peers_with_their_own_spread_are_equivalent() -> None:
    rng = np.random.default_rng(2)
    peers = rng.normal(0.0, 0.0005, (5, 400))
    cell = rng.normal(0.0, 0.0005, 400)
    assert forced_comparison(cell, peers).verdict == "equivalent"
    assert forced_comparison(cell[:3], peers[:, :3]).verdict != "different"


def test_at_the_tolerance_the_false_different_rate_is_alpha() -> None:
    """Boundary of H0: E|d| equals the tolerance exactly (a half-normal deviation against one peer at 0)."""
    rng = np.random.default_rng(3)
    alpha, sims, n, sigma = 0.05, 2000, 400, 0.01
    floor = sigma * math.sqrt(2.0 / math.pi)
    rejected = sum(
        forced_comparison(rng.normal(0.0, sigma, n), np.zeros((1, n)), alpha=alpha, floor=floor).verdict
        == "different"
        for _ in range(sims)
    )
    rate, mc_error = rejected / sims, math.sqrt(alpha * (1 - alpha) / sims)
    assert abs(rate - alpha) < 4 * mc_error, f"false-different rate {rate:.4f} ± {mc_error:.4f}"


def test_mmd2_matches_the_textbook_unbiased_estimate() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 2))
    gram = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    is_a = np.array([True, True, True, False, False, False, False])
    a, b = gram[:3, :3], gram[3:, 3:]
    expected = (a.sum() - np.trace(a)) / 6 + (b.sum() - np.trace(b)) / 12 - 2 * gram[:3, 3:].mean()
    assert mmd2(gram, is_a)[0] == pytest.approx(expected)


def test_the_hamming_kernel_counts_equal_positions_and_is_zero_across_prompts() -> None:
    encoded = encode(["the cat sat", "the dog sat", "the cat sat"], length=4)
    gram = hamming_gram(encoded, np.array([0, 0, 1]))
    assert gram[0, 1] == pytest.approx(2 / 4) and gram[0, 0] == pytest.approx(3 / 4)
    assert gram[0, 2] == 0.0  # same text, another prompt


def _samples(
    rng: np.random.Generator, words: list[str], weights: list[float], n: int
) -> list[tuple[int, str]]:
    out = []
    for prompt in range(3):
        for _ in range(n):
            picks = rng.choice(words, size=6, p=weights)
            out.append((prompt, " ".join(picks)))
    return out


def test_mmd_rejects_at_alpha_on_equal_distributions_and_finds_a_shifted_one() -> None:
    rng = np.random.default_rng(5)
    words, same = ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1]
    alpha, sims = 0.05, 200
    rejected = sum(
        mmd_test(
            _samples(rng, words, same, 10), _samples(rng, words, same, 10), rng, permutations=200
        ).p_value
        <= alpha
        for _ in range(sims)
    )
    mc_error = math.sqrt(alpha * (1 - alpha) / sims)
    assert rejected / sims < alpha + 3 * mc_error, f"{rejected / sims:.3f} ± {mc_error:.3f}"
    other = [0.1, 0.2, 0.3, 0.4]
    shifted = mmd_test(_samples(rng, words, same, 30), _samples(rng, words, other, 30), rng)
    assert shifted.p_value == pytest.approx(1 / 4001) and shifted.statistic > shifted.null_quantile


def test_consensus_needs_a_majority_and_divergence_is_found_at_its_token() -> None:
    assert consensus(["x", "x", "y"]) == "x" and consensus(["x", "y"]) is None and consensus([]) is None
    assert first_divergent_token("The sky is blue today", "The sky is grey today") == 3
    assert first_divergent_token("same", "same") is None
    assert first_divergent_token("The sky", "The sky is") == 2


def test_greedy_comparison_is_cmh_over_prompts_against_the_peers_own_divergence() -> None:
    reference = {f"p{i}": f"answer {i} is fine" for i in range(6)}
    peers = {p: [[r] * 4, [r] * 4, [r] * 3 + ["answer drifted"]] for p, r in reference.items()}
    cell = {p: [r, "answer other", "answer other", r] for p, r in reference.items()}
    result, positions = greedy_comparison(cell, peers, alpha=0.01)
    expected = cmh_test([2] * 6, [4] * 6, [1] * 6, [12] * 6).p_value
    assert result.p_value == pytest.approx(expected)
    assert result.verdict == "different" and positions == [1] * 12
    healthy, _ = greedy_comparison({p: [r] * 20 for p, r in reference.items()}, peers, alpha=0.01)
    assert healthy.verdict != "different" and healthy.effect < 0


def test_deviations_growing_along_long_continuations_keep_the_level() -> None:
    """A kv_quant-like deviation, its scale growing with position over 300-token continuations,
    exactly at the tolerance on average: the false-different rate stays at alpha (tokens independent,
    not identically distributed)."""
    rng = np.random.default_rng(6)
    alpha, sims = 0.05, 2000
    scale = 0.01 * np.sqrt(np.tile(np.arange(1, 301), 2) / 300)  # two long probes
    floor = float(np.mean(scale)) * math.sqrt(2.0 / math.pi)  # E|d| averaged over the tokens
    peers = np.zeros((1, scale.size))
    rejected = sum(
        forced_comparison(scale * rng.standard_normal(scale.size), peers, alpha=alpha, floor=floor).verdict
        == "different"
        for _ in range(sims)
    )
    rate, mc_error = rejected / sims, math.sqrt(alpha * (1 - alpha) / sims)
    assert abs(rate - alpha) < 4 * mc_error, f"false-different rate {rate:.4f} ± {mc_error:.4f}"
