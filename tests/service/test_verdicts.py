"""Pure verdict logic: PASS on identical fleets, FAIL on an injected fault, INCONCLUSIVE on few samples."""

from __future__ import annotations

import numpy as np

from canary.config.sections import VerdictPolicy
from canary.verdicts.judgement import MetricSamples, advance, judge

POLICY = VerdictPolicy()


def rates(metric: str, cf: int, cn: int, bf: int, bn: int) -> MetricSamples:
    return MetricSamples(metric, canary_failures=cf, canary_n=cn, baseline_failures=bf, baseline_n=bn)


def test_identical_fleets_pass() -> None:
    samples = [rates("unexpected_script", 1, 200, 1, 200), rates("known_answer", 10, 200, 10, 200)]
    verdict = judge(samples, POLICY)
    assert verdict.outcome == "PASS"
    assert verdict.exit_code == 0
    assert all(m.outcome == "PASS" for m in verdict.metrics)


def test_injected_corruption_on_a_critical_metric_fails_alone() -> None:
    samples = [rates("unexpected_script", 20, 200, 0, 200), rates("known_answer", 10, 200, 10, 200)]
    verdict = judge(samples, POLICY)
    assert verdict.outcome == "FAIL"
    assert verdict.exit_code == 1
    assert "unexpected_script" in verdict.reason
    failing = {m.metric: m for m in verdict.metrics}["unexpected_script"]
    assert failing.critical and failing.p_value is not None and failing.p_value < 0.001
    assert failing.effect == 0.1


def test_too_few_samples_is_inconclusive_never_pass() -> None:
    verdict = judge([rates("unexpected_script", 0, 10, 0, 10), rates("known_answer", 0, 10, 0, 10)], POLICY)
    assert verdict.outcome == "INCONCLUSIVE"
    assert verdict.exit_code == 2


def test_no_samples_at_all_is_inconclusive() -> None:
    assert judge([], POLICY).outcome == "INCONCLUSIVE"


def test_a_critical_metric_short_of_samples_keeps_the_verdict_inconclusive() -> None:
    samples = [rates("code_syntax", 0, 5, 0, 5), rates("known_answer", 2, 200, 2, 200)]
    assert judge(samples, POLICY).outcome == "INCONCLUSIVE"


def test_a_muted_metric_is_reported_but_never_decides() -> None:
    policy = VerdictPolicy(muted_metrics=("known_answer",))
    samples = [rates("unexpected_script", 0, 200, 0, 200), rates("known_answer", 80, 200, 10, 200)]
    verdict = judge(samples, policy)
    muted = {m.metric: m for m in verdict.metrics}["known_answer"]
    assert muted.outcome == "FAIL" and muted.muted
    assert verdict.outcome == "PASS"


def test_ordinary_failures_beyond_the_tolerance_fail_the_verdict() -> None:
    samples = [rates("known_answer", 60, 200, 10, 200), rates("determinism", 0, 200, 0, 200)]
    assert judge(samples, POLICY).outcome == "FAIL"
    assert judge(samples, VerdictPolicy(tolerated_failures=1)).outcome == "PASS"


def test_a_significant_but_tiny_effect_passes_under_a_practical_threshold() -> None:
    samples = [rates("known_answer", 60, 2000, 20, 2000)]
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


def test_a_single_failing_look_does_not_end_a_running_deploy() -> None:
    fail = judge([rates("unexpected_script", 20, 200, 0, 200)], POLICY)
    state = advance(fail, 0, window_over=False, policy=POLICY)
    assert state.status == "running" and state.fail_streak == 1
    state = advance(fail, POLICY.consecutive_failures - 1, window_over=False, policy=POLICY)
    assert state.status == "fail"


def test_a_pass_resets_the_streak_and_never_ends_the_window_early() -> None:
    ok = judge([rates("unexpected_script", 0, 200, 0, 200)], POLICY)
    state = advance(ok, 2, window_over=False, policy=POLICY)
    assert state.status == "running" and state.fail_streak == 0
    assert advance(ok, 0, window_over=True, policy=POLICY).status == "pass"
