"""Per-deploy verdicts: canary cells against baseline cells, metric by metric. Pure: no I/O, no clock.

A deploy's verdict is PASS, FAIL or INCONCLUSIVE, and INCONCLUSIVE means "a human decides", never
"pass". :func:`judge` takes per-metric failure counts (and continuous values such as latency) for
both sides and applies a :class:`~canary.config.sections.VerdictPolicy` (``[service.verdict]``):

1. Each metric is tested on its own: an exact test for failure rates (Boschloo, else Fisher; one
   sided: "does the canary fail more often?"), Mann-Whitney U for continuous values.
2. A metric with fewer than ``min_samples`` observations on either side is INCONCLUSIVE.
3. Across the deciding (not muted) metrics, Benjamini-Hochberg at ``alpha`` picks the significant
   ones; a significant metric whose effect exceeds the practical threshold FAILs, others PASS.
4. Overall: a failing critical metric fails the verdict alone; more than ``tolerated_failures``
   failing ordinary metrics fail it; a critical metric without enough samples, or no metric with
   enough, makes it INCONCLUSIVE; otherwise PASS. Muted (dry-run) metrics are reported, never decide.

:func:`advance` turns successive evaluations of a running deploy into its status, with the
consecutive-failure limit that deploy gates (Flagger's ``threshold``, Argo's ``failureLimit``) use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from canary.config.sections import VerdictPolicy

Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 2}


@dataclass(frozen=True)
class MetricSamples:
    """One metric's observations on both sides: failure counts, or continuous values."""

    metric: str
    canary_failures: int = 0
    canary_n: int = 0
    baseline_failures: int = 0
    baseline_n: int = 0
    canary_values: tuple[float, ...] | None = None  # set for continuous metrics
    baseline_values: tuple[float, ...] | None = None

    @property
    def continuous(self) -> bool:
        return self.canary_values is not None


@dataclass
class MetricResult:
    """One metric's judgement, with the numbers a reviewer needs to check it."""

    metric: str
    kind: Literal["rate", "continuous"]
    outcome: Outcome
    reason: str
    critical: bool
    muted: bool
    canary_n: int
    baseline_n: int
    canary_rate: float | None = None
    baseline_rate: float | None = None
    effect: float | None = None  # rate difference, or Hodges-Lehmann shift for continuous values
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    method: str | None = None


@dataclass
class Verdict:
    outcome: Outcome
    reason: str
    metrics: list[MetricResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:  # JSON has no NaN
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "verdict": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "metrics": [{k: clean(v) for k, v in asdict(m).items()} for m in self.metrics],
        }


def _test(s: MetricSamples, policy: VerdictPolicy) -> MetricResult:
    """Run the metric's test; the outcome is provisional until multiple testing is applied."""
    # scipy.stats takes a second to import; loading it on the first verdict keeps `canary serve`
    # start-up fast.
    from canary.stats import compare_continuous, compare_rates

    critical, muted = s.metric in policy.critical_metrics, s.metric in policy.muted_metrics
    if s.continuous:
        x, y = s.canary_values or (), s.baseline_values or ()
        result = MetricResult(s.metric, "continuous", "INCONCLUSIVE", "", critical, muted, len(x), len(y))
        if len(x) < policy.min_samples or len(y) < policy.min_samples:
            result.reason = f"too few samples (need {policy.min_samples} per side)"
            return result
        shift = compare_continuous(x, y, alternative="greater")
        result.canary_rate, result.baseline_rate = float(np.median(x)), float(np.median(y))
        result.effect, result.ci_low, result.ci_high = shift.shift, shift.ci_low, shift.ci_high
        result.p_value, result.method = shift.p_value, "mann-whitney"
        return result
    result = MetricResult(s.metric, "rate", "INCONCLUSIVE", "", critical, muted, s.canary_n, s.baseline_n)
    if s.canary_n < policy.min_samples or s.baseline_n < policy.min_samples:
        result.reason = f"too few samples (need {policy.min_samples} per side)"
        return result
    cmp = compare_rates(s.canary_failures, s.canary_n, s.baseline_failures, s.baseline_n, "greater")
    result.canary_rate, result.baseline_rate = cmp.rate, cmp.baseline_rate
    result.effect, result.ci_low, result.ci_high = cmp.effect, cmp.ci_low, cmp.ci_high
    result.p_value, result.method = cmp.p_value, cmp.method
    return result


def _harmful(r: MetricResult, policy: VerdictPolicy) -> bool:
    """Whether a significant difference is large enough to matter."""
    if r.effect is None:
        return False
    if r.kind == "rate":
        return r.effect > policy.min_effect
    return r.effect > policy.min_relative_shift * abs(r.baseline_rate or 0.0)


def _decide_metrics(results: list[MetricResult], policy: VerdictPolicy) -> None:
    """Steps 2-3: BH across deciding metrics; muted metrics are judged alone at ``alpha``."""
    from canary.stats import benjamini_hochberg

    tested = [r for r in results if r.p_value is not None]
    deciding = [r for r in tested if not r.muted]
    p_values = [r.p_value if r.p_value is not None else 1.0 for r in deciding]
    rejected: list[bool] = [bool(v) for v in benjamini_hochberg(p_values, q=policy.alpha)] if deciding else []
    significant = {id(r) for r, rej in zip(deciding, rejected, strict=True) if rej}
    significant |= {id(r) for r in tested if r.muted and (r.p_value or 1.0) <= policy.alpha}
    for r in tested:
        if id(r) in significant and _harmful(r, policy):
            r.outcome, r.reason = "FAIL", f"canary worse than baseline (p={r.p_value:.2g})"
        elif id(r) in significant:
            r.outcome, r.reason = "PASS", "significant but below the practical threshold"
        else:
            r.outcome, r.reason = "PASS", "no significant difference"


def judge(samples: Sequence[MetricSamples], policy: VerdictPolicy) -> Verdict:
    """Judge a deploy from per-metric samples (see the module docstring for the steps)."""
    results = [_test(s, policy) for s in sorted(samples, key=lambda s: s.metric)]
    _decide_metrics(results, policy)
    deciding = [r for r in results if not r.muted]
    failed_critical = [r.metric for r in deciding if r.critical and r.outcome == "FAIL"]
    failed_other = [r.metric for r in deciding if not r.critical and r.outcome == "FAIL"]
    if failed_critical:
        return Verdict("FAIL", f"critical metric failed: {', '.join(failed_critical)}", results)
    if len(failed_other) > policy.tolerated_failures:
        return Verdict("FAIL", f"metrics failed: {', '.join(failed_other)}", results)
    short_critical = [r.metric for r in deciding if r.critical and r.outcome == "INCONCLUSIVE"]
    if short_critical:
        return Verdict("INCONCLUSIVE", f"too few samples for critical {', '.join(short_critical)}", results)
    if not any(r.outcome == "PASS" for r in deciding):
        return Verdict("INCONCLUSIVE", "no metric has enough samples on both sides", results)
    return Verdict("PASS", "no metric worse on the canary", results)


@dataclass(frozen=True)
class DeployState:
    """What :func:`advance` decides after one evaluation of a deploy."""

    status: Literal["running", "pass", "fail", "inconclusive"]
    fail_streak: int
    reason: str


def advance(verdict: Verdict, fail_streak: int, window_over: bool, policy: VerdictPolicy) -> DeployState:
    """The deploy's status after an evaluation.

    While the window is open, a FAIL must repeat on ``consecutive_failures`` evaluations in a row
    to end the deploy early (one unlucky look is not enough); PASS never ends it early, because
    the canary must run its whole window. When the window is over, the last evaluation decides.
    """
    streak = fail_streak + 1 if verdict.outcome == "FAIL" else 0
    if window_over:
        return DeployState(verdict.outcome.lower(), streak, verdict.reason)  # type: ignore[arg-type]
    if streak >= policy.consecutive_failures:
        return DeployState("fail", streak, f"{verdict.reason} ({streak} evaluations in a row)")
    return DeployState("running", streak, verdict.reason)
