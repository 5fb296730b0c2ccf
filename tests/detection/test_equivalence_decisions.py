"""Equivalence candidates from arrays (pure): which cell, which test, at what level."""

from __future__ import annotations

import math

import numpy as np

from canary.config.sections import DetectionSpec
from canary.detection.decisions import YEAR_S, format_message
from canary.detection.equivalence import (
    FORCED,
    GREEDY,
    SAMPLED,
    CellRuns,
    SampledMemo,
    equivalence_candidates,
    equivalence_level,
    mean_logprobs,
    sampled_level,
    sampled_to_read,
)

SPEC = DetectionSpec()
NAMES = {i: (f"m/p/pool{i}", "m") for i in range(4)} | {9: ("other/p/pool9", "other")}


def forced(
    rng: np.random.Generator, noise: float, shift: float = 0.0, tokens: int = 200
) -> dict[tuple[str, int], list[float]]:
    base = np.random.default_rng(0).normal(-2.0, 1.5, tokens)
    return {("tf", 1): list(base + noise * rng.standard_normal(tokens) + shift * rng.standard_normal(tokens))}


def test_the_level_is_the_tests_budget_share_over_a_years_rounds() -> None:
    assert equivalence_level(SPEC, 9) == SPEC.false_alarms_per_cell_year / 9 / (YEAR_S / SPEC.interval_s)


def test_only_the_perturbed_cell_is_a_forced_candidate_and_other_models_are_not_peers() -> None:
    rng = np.random.default_rng(1)
    evidence = {i: CellRuns(forced=forced(rng, 0.0005, shift=0.05 if i == 2 else 0.0)) for i in range(4)}
    evidence[9] = CellRuns(forced=forced(rng, 0.0005, shift=0.5))  # alone for its model: no peers
    found = equivalence_candidates(evidence, NAMES, SPEC, {})
    assert [(c.cell, c.metric, c.kind) for c in found] == [("m/p/pool2", FORCED, "equivalence")]
    c = found[0]
    assert c.p_value < equivalence_level(SPEC, 1) and c.effect > c.details["tolerance"]
    message = format_message(c, change_at=None, deploy_ids=[], sample=None)
    assert "forced_logprob_deviation" in message and "200 tokens" in message and "peers (3)" in message


def test_a_different_tokenizer_is_different_and_a_healthy_fleet_is_not() -> None:
    rng = np.random.default_rng(2)
    evidence = {i: CellRuns(forced=forced(rng, 0.0005)) for i in range(4)}
    assert equivalence_candidates(evidence, NAMES, SPEC, {}) == []
    evidence[3] = CellRuns(forced=forced(rng, 0.0005, tokens=190))
    assert [(c.cell, c.details["statistic"]) for c in equivalence_candidates(evidence, NAMES, SPEC, {})] == [
        ("m/p/pool3", "forced_token_count")
    ]


def test_a_cell_whose_greedy_answers_leave_the_consensus_is_a_greedy_candidate() -> None:
    prompts = [f"g{k}#1" for k in range(40)]
    evidence = {i: CellRuns(greedy={p: [f"answer {p}"] * 3 for p in prompts}) for i in range(4)}
    evidence[1] = CellRuns(greedy={p: [f"other {p}"] * 3 for p in prompts})
    found = equivalence_candidates(evidence, NAMES, SPEC, {})
    assert [(c.cell, c.metric) for c in found] == [("m/p/pool1", GREEDY)]


def test_passes_are_averaged_over_the_most_common_token_count() -> None:
    assert mean_logprobs([[-1.0, -2.0], [-3.0, -4.0], [-9.0]]) == [-2.0, -3.0]


def sampled(rng: np.random.Generator, skew: float, n: int = 60) -> dict[str, list[str]]:
    words = ["the", "a", "old", "keeper", "night", "sea", "light", "ship"]
    weights = np.array([skew, *([(1 - skew) / 7] * 7)])
    return {f"s{k}#1": [" ".join(rng.choice(words, size=20, p=weights)) for _ in range(n)] for k in range(4)}


def test_a_cell_sampling_another_distribution_is_a_sampled_candidate_retested_only_on_new_runs() -> None:
    rng = np.random.default_rng(4)
    evidence = {
        i: CellRuns(sampled=sampled(rng, 0.3), sampled_latest=10 + i, sampled_passes=6) for i in range(4)
    }
    evidence[2] = CellRuns(sampled=sampled(rng, 0.5), sampled_latest=12, sampled_passes=6)
    memo: SampledMemo = {}
    assert sampled_to_read(evidence, NAMES, memo) == {0, 1, 2, 3}
    found = equivalence_candidates(evidence, NAMES, SPEC, {}, memo)
    assert sampled_to_read(evidence, NAMES, memo) == set()  # nothing new: no text is read
    assert [(c.cell, c.metric) for c in found] == [("m/p/pool2", SAMPLED)]
    assert found[0].threshold == -math.log(sampled_level(SPEC, 1, 6)) and sorted(memo) == [0, 1, 2, 3]
    message = format_message(found[0], change_at=None, deploy_ids=[], sample=None)
    assert "mmd_betting" in message and "sample steps against peers (3)" in message
    # Without new sampled runs a cell keeps its comparison (no new look); with them it is tested again.
    evidence[2] = CellRuns(sampled=sampled(rng, 0.3), sampled_latest=12, sampled_passes=6)
    assert [c.cell for c in equivalence_candidates(evidence, NAMES, SPEC, {}, memo)] == ["m/p/pool2"]
    evidence[2].sampled_latest = 20
    assert equivalence_candidates(evidence, NAMES, SPEC, {}, memo) == []


def test_the_sampled_test_looks_once_a_pass_and_never_more_often_than_the_rounds() -> None:
    passes_per_year = YEAR_S / SPEC.peer_window_s
    assert sampled_level(SPEC, 2, 2) == SPEC.false_alarms_per_cell_year / 2 / (2 * passes_per_year)
    assert sampled_level(SPEC, 2, 10_000) == equivalence_level(SPEC, 2)
