"""The kernel two-sample test by betting: its witness against the kernel matrix, its bets against
hand-computed wealth, its level and power by simulation with fixed seeds."""

from __future__ import annotations

import math

import numpy as np

from canary.stats.mmd import hamming_gram
from canary.stats.mmd_betting import bet, betting_test, betting_test_texts, witness_gaps

LENGTH = 32


def draw(rng: np.random.Generator, n: int, skew: float = 0.6) -> np.ndarray:
    """``n`` token sequences: per position a skewed choice of 6 tokens, a third shifted by one."""
    rest = (1.0 - skew) * np.array([0.5, 0.25, 0.125, 0.075, 0.05])
    ids = rng.choice(6, size=(n, LENGTH), p=[skew, *rest])
    shifted = rng.random(n) < 0.3
    ids[shifted, 1:] = ids[shifted, :-1]
    return np.asarray(ids + 10 * np.arange(LENGTH), dtype=np.int64)


def test_the_witness_is_the_kernel_mean_embeddings_difference_over_earlier_steps() -> None:
    rng = np.random.default_rng(3)
    n, m = 12, 3
    cell, peers = draw(rng, n), np.stack([draw(rng, n) for _ in range(m)])
    cell[4, 20:] = -1  # a short completion: padding matches nothing
    samples = np.concatenate([cell, peers.reshape(m * n, LENGTH)])
    gram = hamming_gram(samples, np.zeros(len(samples), dtype=np.int64))
    step, is_cell = np.tile(np.arange(n), m + 1), np.arange(len(samples)) < n

    def witness(i: int) -> float:
        if step[i] == 0:
            return 0.0
        earlier = step < step[i]
        return float(gram[i, earlier & is_cell].mean() - gram[i, earlier & ~is_cell].mean())

    w = np.array([witness(i) for i in range(len(samples))])
    expected = w[:n][None, :] - w[n:].reshape(m, n)
    assert np.allclose(witness_gaps(cell, peers), expected, atol=1e-12)


def test_the_online_newton_bets_grow_as_computed_by_hand() -> None:
    # lambda starts at 0; after a payoff of 1 the step takes it past the 1/2 cap.
    assert math.isclose(bet([1.0, 1.0]), math.log(1.5))
    assert bet([0.0] * 10) == 0.0
    assert bet([-1.0] * 10) == 0.0  # one-sided: no bet is placed against the cell differing


def test_under_h0_the_level_holds_at_every_sample_size() -> None:
    """Same distribution for the cell and its peers: rejections at alpha over 400 seeds."""
    rng, alpha, reps = np.random.default_rng(15), 0.05, 400
    rejected, effects = 0, []
    for _ in range(reps):
        cells = [draw(rng, 40) for _ in range(6)]
        r = betting_test([(cells[0], cells[1:]), (cells[1], [cells[0], *cells[2:]])])
        rejected += r.p_value <= alpha
        effects.append(r.effect)
    rate = rejected / reps
    mc_error = math.sqrt(alpha * (1 - alpha) / reps)
    assert rate <= alpha + 3 * mc_error, f"false rejections {rate:.3f} (Monte Carlo error {mc_error:.3f})"
    assert abs(float(np.mean(effects))) < 4 * float(np.std(effects)) / math.sqrt(reps)


def test_a_cell_sampling_another_distribution_is_found_at_a_detection_level() -> None:
    rng = np.random.default_rng(16)
    prompts = [(draw(rng, 64, skew=0.45), [draw(rng, 64) for _ in range(5)]) for _ in range(4)]
    r = betting_test(prompts)
    assert r.p_value < 1e-6 and r.effect > 0.2 and r.steps == 4 * 63


def test_texts_are_encoded_together_and_peers_short_of_samples_shorten_the_steps() -> None:
    cell = ["the cat sat on the mat"] * 6
    peers = [["a dog ran in the park"] * 6, ["a dog ran in the park"] * 3]
    r = betting_test_texts([(cell, peers)])
    assert r.steps == 5 and r.effect == 1.0  # the cell's answer is always nearer its own
    assert betting_test_texts([(cell, [])]).steps == 0
