"""Pure verdict logic: PASS on identical fleets with enough runs, FAIL on an injected fault at any look,
INCONCLUSIVE when the runs cannot rule out the stated effect; false FAILs and power under 60 looks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench._verdicts_sim import deploy_outcome, window_runs
from canary.config.sections import VerdictPolicy
from canary.verdicts.judgement import MetricSamples, advance, judge

POLICY = VerdictPolicy()


def rates(metric: str, cf: int, cn: int, bf: int, bn: int) -> MetricSamples:
    return MetricSamples(metric, canary_failures=cf, canary_n=cn, baseline_failures=bf, baseline_n=bn)


def se(rate: float, n: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 1e-12) / n)


def test_identical_fleets_pass_once_the_runs_rule_out_the_stated_effect() -> None:
    samples = [rates("unexpected_script", 1, 500, 1, 500), rates("known_answer", 25, 500, 25, 500)]
    verdict = judge(samples, POLICY)
    assert verdict.outcome == "PASS"
    assert verdict.exit_code == 0
    assert all(m.outcome == "PASS" for m in verdict.metrics)
    assert all(m.mde is not None and m.mde <= POLICY.detect_effect for m in verdict.metrics)


def test_identical_fleets_with_too_few_runs_for_the_stated_effect_are_inconclusive() -> None:
    verdict = judge([rates("unexpected_script", 1, 100, 1, 100)], POLICY)
    assert verdict.outcome == "INCONCLUSIVE"
    [metric] = verdict.metrics
    assert metric.mde is not None and metric.mde > POLICY.detect_effect
    assert "detect only" in metric.reason and "need +10.0 pts" in metric.reason


def test_injected_corruption_on_a_critical_metric_fails_alone() -> None:
    samples = [rates("unexpected_script", 20, 200, 0, 200), rates("known_answer", 10, 200, 10, 200)]
    verdict = judge(samples, POLICY)
    assert verdict.outcome == "FAIL"
    assert verdict.exit_code == 1
    assert "unexpected_script" in verdict.reason
    failing = {m.metric: m for m in verdict.metrics}["unexpected_script"]
    assert failing.critical and failing.p_value is not None and failing.p_value < 0.001
    assert failing.e_value is not None and failing.e_threshold == 2 / POLICY.alpha <= failing.e_value
    assert failing.effect == 0.1


def test_three_of_thirty_against_none_of_thirty_on_a_critical_metric_does_not_pass() -> None:
    """A fixed-sample test at 30 runs PASSed this (Boschloo p = 0.078); 30 runs cannot rule out
    +10 pts, so the verdict says so instead."""
    verdict = judge([rates("unexpected_script", 3, 30, 0, 30)], POLICY)
    assert verdict.outcome == "INCONCLUSIVE"
    [metric] = verdict.metrics
    assert metric.outcome == "INCONCLUSIVE" and metric.mde is not None and metric.mde > 0.3
    assert "unexpected_script" in verdict.reason and "detect only" in verdict.reason


@pytest.mark.parametrize(
    ("canary", "baseline"),
    [((70, 100), (10, 100)), ((70, 100), (0, 100)), ((30, 100), (0, 100))],
    ids=["70%-vs-10%", "70%-vs-0%", "30%-vs-0%"],
)
def test_a_gross_regression_at_100_runs_fails(canary: tuple[int, int], baseline: tuple[int, int]) -> None:
    verdict = judge([rates("known_answer", *canary, *baseline)], POLICY)
    assert verdict.outcome == "FAIL"


def test_too_few_samples_is_inconclusive_never_pass() -> None:
    verdict = judge([rates("unexpected_script", 0, 10, 0, 10), rates("known_answer", 0, 10, 0, 10)], POLICY)
    assert verdict.outcome == "INCONCLUSIVE"
    assert verdict.exit_code == 2


def test_no_samples_at_all_is_inconclusive() -> None:
    assert judge([], POLICY).outcome == "INCONCLUSIVE"


def test_a_critical_metric_short_of_samples_keeps_the_verdict_inconclusive() -> None:
    samples = [rates("code_syntax", 0, 5, 0, 5), rates("known_answer", 2, 200, 2, 200)]
    verdict = judge(samples, POLICY)
    assert verdict.outcome == "INCONCLUSIVE" and "code_syntax" in verdict.reason


def test_a_muted_metric_is_reported_but_never_decides() -> None:
    policy = VerdictPolicy(muted_metrics=("known_answer",))
    samples = [rates("unexpected_script", 0, 200, 0, 200), rates("known_answer", 80, 200, 10, 200)]
    verdict = judge(samples, policy)
    muted = {m.metric: m for m in verdict.metrics}["known_answer"]
    assert muted.outcome == "FAIL" and muted.muted and muted.e_threshold == 1 / policy.alpha
    assert verdict.outcome == "PASS"


def test_ordinary_failures_beyond_the_tolerance_fail_the_verdict() -> None:
    samples = [rates("known_answer", 60, 200, 10, 200), rates("determinism", 0, 200, 0, 200)]
    assert judge(samples, POLICY).outcome == "FAIL"
    assert judge(samples, VerdictPolicy(tolerated_failures=1)).outcome == "PASS"


def test_a_real_but_tolerated_increase_passes_under_a_practical_threshold() -> None:
    samples = [rates("known_answer", 60, 2000, 20, 2000)]  # +2 pts
    assert judge(samples, POLICY).outcome == "FAIL"
    assert judge(samples, VerdictPolicy(min_effect=0.05)).outcome == "PASS"


def test_slower_canary_latency_fails_when_latency_is_not_muted() -> None:
    rng = np.random.default_rng(7)
    base = tuple(float(v) for v in rng.lognormal(5.0, 0.2, 100))
    slow = tuple(v * 2.0 for v in base)
    samples = [MetricSamples("latency_ms", canary_values=slow, baseline_values=base)]
    assert judge(samples, VerdictPolicy(muted_metrics=())).outcome == "FAIL"
    same = [MetricSamples("latency_ms", canary_values=base, baseline_values=base)]
    assert judge(same, VerdictPolicy(muted_metrics=())).outcome == "PASS"
    assert judge(samples, POLICY).outcome == "INCONCLUSIVE"  # muted by default: nothing decides


def test_verdict_json_has_no_nan_and_carries_per_metric_numbers() -> None:
    body = judge([rates("unexpected_script", 0, 0, 0, 50)], POLICY).to_dict()
    assert body["verdict"] == "INCONCLUSIVE"
    metric = body["metrics"][0]
    assert metric["canary_n"] == 0 and metric["baseline_n"] == 50
    assert {"p_value", "effect", "ci_low", "ci_high", "canary_rate", "baseline_rate"} <= metric.keys()
    assert {"e_value", "e_threshold", "mde", "planned_baseline_rate"} <= metric.keys()
    assert all(not isinstance(v, float) or math.isfinite(v) for v in metric.values())


def test_a_single_failing_look_ends_a_running_deploy() -> None:
    fail = judge([rates("unexpected_script", 20, 200, 0, 200)], POLICY)
    assert advance(fail, window_over=False).status == "fail"


def test_a_pass_never_ends_the_window_early() -> None:
    ok = judge([rates("unexpected_script", 0, 500, 0, 500)], POLICY)
    assert ok.outcome == "PASS"
    assert advance(ok, window_over=False).status == "running"
    assert advance(ok, window_over=True).status == "pass"
    short = judge([rates("unexpected_script", 0, 50, 0, 50)], POLICY)
    assert advance(short, window_over=True).status == "inconclusive"


def test_the_removed_consecutive_failures_key_says_why() -> None:
    with pytest.raises(ValueError, match="consecutive_failures' was removed"):
        VerdictPolicy.model_validate({"consecutive_failures": 3})
    with pytest.raises(ValueError, match="smaller than 'detect_effect'"):
        VerdictPolicy(min_effect=0.1, detect_effect=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.0, 0.02, 0.2])
def test_identical_sides_looked_at_60_times_fail_at_most_alpha_of_the_time(rate: float) -> None:
    """The deploy's window holds what the test needs for +10 pts; 60 evenly spaced looks, ending at
    the first FAIL (bench/_verdicts_sim.py, the product's judge and advance)."""
    rng = np.random.default_rng(int(rate * 1000) + 1)
    runs, reps = window_runs(rate, POLICY), 200
    outcomes = [deploy_outcome(rate, rate, runs, 60, POLICY, rng) for _ in range(reps)]
    false_fail = sum(o == "fail" for o in outcomes) / reps
    bound = POLICY.alpha + 3 * se(POLICY.alpha, reps)
    assert false_fail <= bound, (
        f"false FAIL {false_fail:.4f} ± {se(false_fail, reps):.4f} over {reps} deploys"
    )


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.0, 0.02, 0.2])
def test_a_canary_worse_by_the_stated_effect_fails_with_the_stated_power(rate: float) -> None:
    rng = np.random.default_rng(int(rate * 1000) + 7)
    runs, reps = window_runs(rate, POLICY), 150
    outcomes = [deploy_outcome(rate + POLICY.detect_effect, rate, runs, 60, POLICY, rng) for _ in range(reps)]
    power = sum(o == "fail" for o in outcomes) / reps
    floor = POLICY.power - 3 * se(POLICY.power, reps)
    assert power >= floor, (
        f"power {power:.4f} ± {se(power, reps):.4f} over {reps} deploys, stated {POLICY.power}"
    )
