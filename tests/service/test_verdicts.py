"""Pure verdict logic: PASS on identical fleets with enough runs, FAIL on an injected fault at any look,
INCONCLUSIVE when the runs cannot rule out the stated effect; false FAILs and power under 60 looks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench._verdicts_sim import ORDER_NULLS, deploy_outcome, order_outcome, order_window, window_runs
from canary.config.sections import VerdictPolicy
from canary.stats.stochastic_order import dominance_mde, dominance_sample_size
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
    base = tuple(float(v) for v in rng.lognormal(5.0, 0.2, 200))  # 187 pairs detect dominance 0.3
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


KAYENTA_CANARY = (100.0,) * 7 + (1.0,) * 3  # Kayenta's case: 7 of 10 canary values at 100
KAYENTA_BASELINE = (1.0,) * 10


def latency(canary: tuple[float, ...], baseline: tuple[float, ...]) -> MetricSamples:
    return MetricSamples("latency_ms", canary_values=canary, baseline_values=baseline)


def test_the_kayenta_case_fails_at_ten_values_a_side() -> None:
    """The medians' sign test gave e = 0.69 here; the test of stochastic order reaches 25.6 >= 1/alpha."""
    deciding = VerdictPolicy(muted_metrics=())
    verdict = judge([latency(KAYENTA_CANARY, KAYENTA_BASELINE)], deciding)
    assert verdict.outcome == "FAIL" and "latency_ms" in verdict.reason
    [metric] = verdict.metrics
    assert metric.e_value is not None and metric.e_threshold == 20.0 <= metric.e_value
    assert metric.pairs == 10 and metric.dominance == pytest.approx(0.4)  # 7 above 1.2, 3 below
    muted = judge([latency(KAYENTA_CANARY, KAYENTA_BASELINE)], POLICY).metrics[0]
    assert muted.muted and muted.outcome == "FAIL"  # reported at 1/alpha, never decides


def test_the_kayenta_case_beside_another_deciding_metric_fails_at_twenty_values_a_side() -> None:
    """Two deciding metrics: a lone FAIL needs e >= 2/alpha = 40; 10 pairs give 25.6, 20 give 1911."""
    deciding = VerdictPolicy(muted_metrics=())
    errors = rates("request_errors", 0, 20, 0, 20)
    ten = judge([latency(KAYENTA_CANARY, KAYENTA_BASELINE), errors], deciding)
    assert ten.outcome != "FAIL"
    twenty = judge([latency(KAYENTA_CANARY * 2, KAYENTA_BASELINE * 2), errors], deciding)
    assert twenty.outcome == "FAIL" and twenty.reason == "metrics failed: latency_ms"


def test_the_kayenta_case_fails_at_the_sample_size_derived_from_the_stated_dominance() -> None:
    deciding = VerdictPolicy(muted_metrics=())
    n = dominance_sample_size(deciding.detect_dominance, 1.0 / deciding.alpha, deciding.power)
    k = math.ceil(n / 10)
    verdict = judge([latency(KAYENTA_CANARY * k, KAYENTA_BASELINE * k)], deciding)
    assert verdict.outcome == "FAIL" and verdict.metrics[0].p_value is not None
    assert verdict.metrics[0].p_value < 1e-6


def test_identical_latency_passes_only_once_the_pairs_detect_the_stated_dominance() -> None:
    deciding = VerdictPolicy(muted_metrics=(), min_relative_shift=0.0)
    rng = np.random.default_rng(8)
    n = dominance_sample_size(deciding.detect_dominance, 1.0 / deciding.alpha, deciding.power)
    base, same = rng.lognormal(5.0, 0.5, n), rng.lognormal(5.0, 0.5, n)
    short = judge([latency(tuple(same[:100]), tuple(base[:100]))], deciding).metrics[0]
    assert short.outcome == "INCONCLUSIVE" and short.mde is not None and short.mde > 0.3
    assert "100 pairs detect dominance" in short.reason and "need 0.3" in short.reason
    enough = judge([latency(tuple(same), tuple(base))], deciding).metrics[0]
    assert enough.outcome == "PASS" and enough.mde is not None and enough.mde <= 0.3
    # The MDE is the test's own: at a lone metric's threshold 1/alpha, not the one-sample binomial's.
    assert enough.mde == dominance_mde(n, 1.0 / deciding.alpha, deciding.power)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ORDER_NULLS))
def test_identical_continuous_sides_looked_at_60_times_fail_at_most_alpha_of_the_time(case: str) -> None:
    """At the null's boundary (no tolerance), the window the stated dominance needs, 60 looks through
    judge/advance (bench/_verdicts_sim.py); lognormal, heavy ties, discrete values, heavy tails."""
    policy = VerdictPolicy(muted_metrics=(), min_relative_shift=0.0)
    rng, draw, n = np.random.default_rng(sorted(ORDER_NULLS).index(case) + 31), ORDER_NULLS[case], 187
    reps = 200
    outcomes = [order_outcome(draw(rng, n), draw(rng, n), 60, policy) for _ in range(reps)]
    false_fail = sum(o == "fail" for o in outcomes) / reps
    assert false_fail <= policy.alpha + 3 * se(policy.alpha, reps), (
        f"false FAIL {false_fail:.4f} ± {se(false_fail, reps):.4f} over {reps} deploys"
    )


def test_the_simulated_deploy_ends_as_it_would_with_judge_at_every_look() -> None:
    """The bench's shortcut (judge only from the first look over the threshold) changes no outcome."""
    policy = VerdictPolicy(muted_metrics=(), min_relative_shift=0.0)
    rng, outcomes = np.random.default_rng(51), set()
    for shift in (0.0, 0.0, 0.3, 0.3, 0.6):
        canary, baseline = rng.lognormal(shift, 0.5, 120), rng.lognormal(0.0, 0.5, 120)
        fast = order_outcome(canary, baseline, 30, policy)
        assert fast == order_outcome(canary, baseline, 30, policy, every_look=True)
        outcomes.add(fast)
    assert "fail" in outcomes and len(outcomes) > 1


@pytest.mark.slow
def test_a_canary_of_the_stated_dominance_fails_with_the_stated_power() -> None:
    policy = VerdictPolicy(muted_metrics=(), min_relative_shift=0.0)
    n = order_window(policy)
    mu = 0.5 * math.sqrt(2.0) * float(stats.norm.ppf(0.5 * (1.0 + policy.detect_dominance)))
    rng, reps = np.random.default_rng(41), 200
    outcomes = [
        order_outcome(rng.lognormal(mu, 0.5, n), rng.lognormal(0.0, 0.5, n), 60, policy) for _ in range(reps)
    ]
    power = sum(o == "fail" for o in outcomes) / reps
    assert power >= policy.power - 3 * se(policy.power, reps), f"power {power:.3f} ± {se(power, reps):.3f}"
