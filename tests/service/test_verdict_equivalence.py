"""The verdict's equivalence.forced metric (pure): a canary that scores the same tokens differently
FAILs, one within the baseline's own spread PASSes, and the metric's share of alpha is taken from
the others (explicitly budgeted: Bonferroni over ``equivalence_looks`` looks)."""

from __future__ import annotations

import numpy as np

from canary.config.sections import VerdictPolicy
from canary.verdicts.equivalence import METRIC, forced_level
from canary.verdicts.judgement import MetricSamples, judge

POLICY = VerdictPolicy()
TOKENS = 300


def cells(
    rng: np.random.Generator, count: int, noise: float, shift: float = 0.0
) -> list[dict[tuple[str, int], list[float]]]:
    base = np.random.default_rng(0).normal(-2.0, 1.5, TOKENS)
    return [
        {("tf-a", 1): list(base[:150] + shift * rng.standard_normal(150) + noise * rng.standard_normal(150)),
         ("tf-b", 2): list(base[150:] + shift * rng.standard_normal(150) + noise * rng.standard_normal(150))}
        for _ in range(count)
    ]  # fmt: skip


def forced_metric(
    canary: list[dict[tuple[str, int], list[float]]], baseline: list[dict[tuple[str, int], list[float]]]
):  # type: ignore[no-untyped-def]
    samples = [MetricSamples("answered", 0, 100, 0, 100)]
    verdict = judge(samples, POLICY, (canary, {f"b{i}": b for i, b in enumerate(baseline)}))
    return verdict, {m.metric: m for m in verdict.metrics}[METRIC]


def test_a_canary_scoring_the_same_tokens_differently_fails_the_verdict() -> None:
    rng = np.random.default_rng(1)
    verdict, metric = forced_metric(cells(rng, 1, 0.0005, shift=0.05), cells(rng, 3, 0.0005))
    assert metric.outcome == "FAIL" and metric.canary_n == TOKENS and "nats/token" in metric.reason
    assert metric.p_value is not None and metric.p_value < forced_level(POLICY, 1)
    assert verdict.outcome == "FAIL"


def test_a_canary_within_the_baselines_spread_passes_the_metric() -> None:
    rng = np.random.default_rng(2)
    verdict, metric = forced_metric(cells(rng, 2, 0.0005), cells(rng, 3, 0.0005))
    assert metric.outcome == "PASS", metric.reason
    assert verdict.outcome != "FAIL"


def test_the_metric_takes_its_share_of_alpha_from_the_others() -> None:
    assert forced_level(POLICY, 1) == POLICY.alpha / 2 / POLICY.equivalence_looks
    samples = [MetricSamples("answered", 0, 100, 0, 100)]
    without = judge(samples, POLICY)
    assert [m.metric for m in without.metrics] == ["answered"]
    rng = np.random.default_rng(3)
    with_forced = judge(samples, POLICY, (cells(rng, 1, 0.0005), {"b": cells(rng, 1, 0.0005)[0]}))
    assert with_forced.metrics[0].e_threshold == 2 * without.metrics[0].e_threshold  # type: ignore[operator]
