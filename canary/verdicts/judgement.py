"""Per-deploy verdicts: canary cells against baseline cells, metric by metric. Pure: no I/O, no clock.

A deploy's verdict is PASS, FAIL or INCONCLUSIVE, and INCONCLUSIVE means "a human decides", never
"pass". The service re-judges a running deploy every 30 s, so every test here is anytime-valid: its
evidence is an e-value that may be watched (:mod:`canary.stats.two_sample`,
:mod:`canary.stats.stochastic_order`). :func:`judge` takes per-metric failure counts (and continuous
values such as latency) for both sides and applies a
:class:`~canary.config.sections.VerdictPolicy` (``[service.verdict]``):

1. Each metric gets an e-value against "no harm": for a rate, that the canary fails more often
   than the baseline by at most ``min_effect``; for a continuous metric, that the canary's values
   are stochastically at most ``1 + min_relative_shift`` times the baseline's (a test by betting on
   paired comparisons that also sees a canary tail, such as Kayenta's 7 of 10 values at 100
   against a baseline at 1).
2. e-BH at ``alpha`` across the deciding (not muted) metrics picks the failing ones; a lone
   metric fails at ``e >= m/alpha`` for ``m`` deciding metrics. Muted metrics are judged alone at
   ``1/alpha``. Whatever the number of looks, a deploy whose canary does no harm on any metric
   FAILs with probability at most ``alpha``.
3. A metric that does not fail PASSes only with at least ``min_samples`` per side and enough
   evidence of no harm: for a rate, the test's minimum detectable effect (the increase it catches
   with probability ``power`` at these sample sizes, at a baseline rate planned from the baseline's
   data) is at most ``detect_effect``; for a continuous metric, the dominance
   ``P(canary > (1 + shift) baseline) - P(below)`` its test catches with probability ``power`` at
   these pairs is at most ``detect_dominance``. Otherwise it is INCONCLUSIVE, with the reason.
4. With scheduled equivalence probes, ``equivalence.forced`` (:mod:`canary.verdicts.equivalence`),
   explicitly budgeted: ``1/(m + 1)`` of ``alpha`` over ``equivalence_looks`` looks, the other
   ``m`` deciding metrics sharing the rest.
5. Overall: a failing critical metric fails the verdict alone; more than ``tolerated_failures``
   failing ordinary metrics fail it; a critical metric short of evidence, or no metric with
   enough, makes it INCONCLUSIVE; otherwise PASS. Muted (dry-run) metrics are reported, never decide.

:func:`advance` turns an evaluation of a running deploy into its status: a FAIL ends it at once
(the threshold already allows for every look), a PASS waits for the end of the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from canary.config.sections import VerdictPolicy

if TYPE_CHECKING:  # scipy takes a second to import: kept off `canary serve`'s start-up path
    from canary.stats.audit import Forced

Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 2}


@dataclass(frozen=True)
class MetricSamples:
    """One metric's observations on both sides: failure counts, or continuous values.

    Counts and values are everything observed in the deploy's window so far: the tests are
    anytime-valid for a sample that grows, not for a sliding one.
    """

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
    kind: Literal["rate", "continuous", "equivalence"]
    outcome: Outcome
    reason: str
    critical: bool
    muted: bool
    canary_n: int
    baseline_n: int
    canary_rate: float | None = None  # the median for continuous values
    baseline_rate: float | None = None
    effect: float | None = None  # rate difference, or relative median shift (canary/baseline - 1)
    ci_low: float | None = None  # anytime-valid confidence sequence for the effect, at 1 - alpha
    ci_high: float | None = None
    p_value: float | None = None  # min(1, 1/e_value): an anytime-valid p-value
    method: str | None = None
    e_value: float | None = None  # evidence of harm
    e_threshold: float | None = None  # what e_value must reach to fail on its own
    # The effect the test that ran detects with `power` at these sample sizes and `e_threshold`:
    # rates, an increase; continuous, a dominance (as `dominance`)
    mde: float | None = None
    planned_baseline_rate: float | None = None  # the baseline rate the MDE is computed at
    dominance: float | None = None  # continuous: P(canary > (1 + shift) baseline) - P(below), over pairs
    pairs: int | None = None  # continuous: the (canary, baseline) pairs the test has compared
    log_e: float = field(default=0.0, repr=False)


@dataclass
class Verdict:
    outcome: Outcome
    reason: str
    metrics: list[MetricResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:  # JSON has no NaN or infinity
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "verdict": self.outcome,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "metrics": [{k: clean(v) for k, v in asdict(m).items() if k != "log_e"} for m in self.metrics],
        }


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 690.0))  # ~1e300: beyond any threshold, still a finite float


def _rate_result(s: MetricSamples, policy: VerdictPolicy, critical: bool, muted: bool) -> MetricResult:
    # scipy takes a second to import; loading it on the first verdict keeps `canary serve` start-up fast.
    from canary.stats.anytime import rate_difference_cs
    from canary.stats.two_sample import planning_rate, rate_evidence

    r = MetricResult(s.metric, "rate", "INCONCLUSIVE", "", critical, muted, s.canary_n, s.baseline_n)
    ev = rate_evidence(
        s.canary_failures, s.canary_n, s.baseline_failures, s.baseline_n,
        margin=policy.min_effect, effect=policy.detect_effect,
    )  # fmt: skip
    r.canary_rate = ev.canary_rate if s.canary_n else None
    r.baseline_rate = ev.baseline_rate if s.baseline_n else None
    if s.canary_n and s.baseline_n:
        r.effect = ev.canary_rate - ev.baseline_rate
    r.ci_low, r.ci_high = rate_difference_cs(
        s.canary_failures, s.canary_n, s.baseline_failures, s.baseline_n, policy.alpha
    )
    r.log_e, r.e_value, r.p_value = ev.log_e, ev.e_value, ev.p_value
    if s.baseline_n:
        r.planned_baseline_rate = planning_rate(
            s.baseline_failures, s.baseline_n, policy.detect_effect, policy.power
        )
    r.method = "e-value (universal inference, beta mixture)"
    return r


def _continuous_result(s: MetricSamples, policy: VerdictPolicy, critical: bool, muted: bool) -> MetricResult:
    from canary.stats.median_shift import median_ratio_cs
    from canary.stats.stochastic_order import order_evidence

    x = np.asarray(s.canary_values or (), dtype=np.float64)
    y = np.asarray(s.baseline_values or (), dtype=np.float64)
    r = MetricResult(s.metric, "continuous", "INCONCLUSIVE", "", critical, muted, x.size, y.size)
    ev = order_evidence(x, y, shift=policy.min_relative_shift)
    r.log_e, r.pairs = ev.log_e, ev.pairs
    r.e_value, r.p_value = _e(r.log_e), math.exp(-max(r.log_e, 0.0))
    r.dominance = ev.dominance if ev.pairs else None
    if x.size and y.size:
        r.canary_rate, r.baseline_rate = float(np.median(x)), float(np.median(y))
        if r.baseline_rate > 0:
            r.effect = r.canary_rate / r.baseline_rate - 1.0
        r.ci_low, r.ci_high = median_ratio_cs(x, y, policy.alpha)
    r.method = "e-value (betting on paired comparisons: stochastic order, sign and tail)"
    return r


def _evidence(s: MetricSamples, policy: VerdictPolicy) -> MetricResult:
    critical, muted = s.metric in policy.critical_metrics, s.metric in policy.muted_metrics
    if s.continuous:
        return _continuous_result(s, policy, critical, muted)
    return _rate_result(s, policy, critical, muted)


def _pts(v: float) -> str:
    return f"+{100 * v:.1f} pts" if math.isfinite(v) else "none"


def _pass_or_wait(r: MetricResult, policy: VerdictPolicy, threshold: float) -> None:
    """Step 3: PASS with enough samples and evidence of no harm, else INCONCLUSIVE saying why."""
    from canary.stats.stochastic_order import dominance_mde
    from canary.stats.two_sample import rate_mde

    if r.pairs is not None:
        r.mde = dominance_mde(r.pairs, threshold, policy.power)
    elif r.planned_baseline_rate is not None and r.canary_n:
        r.mde = rate_mde(
            r.canary_n, r.baseline_n, r.planned_baseline_rate, threshold, policy.power,
            margin=policy.min_effect, effect=policy.detect_effect,
        )  # fmt: skip
    if r.canary_n < policy.min_samples or r.baseline_n < policy.min_samples:
        r.outcome, r.reason = "INCONCLUSIVE", f"too few samples (need {policy.min_samples} per side)"
    elif r.kind == "rate":
        assert r.mde is not None
        n = f"{r.canary_n}/{r.baseline_n} observations"
        if r.mde <= policy.detect_effect:
            r.outcome, r.reason = (
                "PASS",
                f"no evidence of harm; {n} detect {_pts(r.mde)} at power {policy.power}",
            )
        else:
            r.outcome = "INCONCLUSIVE"
            r.reason = f"no evidence of harm, but {n} detect only {_pts(r.mde)} at power {policy.power}"
            r.reason += f" (need {_pts(policy.detect_effect)})"
    else:
        assert r.mde is not None
        n = f"{r.pairs} pairs detect dominance {r.mde:.3g} at power {policy.power}"
        if r.mde <= policy.detect_dominance:
            r.outcome, r.reason = "PASS", f"no evidence of harm; {n}"
        else:
            r.outcome = "INCONCLUSIVE"
            r.reason = f"no evidence of harm, but {n} (need {policy.detect_dominance:g})"


def _decide_metrics(results: list[MetricResult], policy: VerdictPolicy) -> None:
    """Steps 2-3: e-BH across deciding metrics; muted metrics are judged alone at ``1/alpha``."""
    from canary.stats.anytime import e_benjamini_hochberg

    deciding = [r for r in results if not r.muted]
    rejected = [bool(v) for v in e_benjamini_hochberg([_e(r.log_e) for r in deciding], policy.alpha)]
    failing = {id(r) for r, rej in zip(deciding, rejected, strict=True) if rej}
    failing |= {id(r) for r in results if r.muted and r.log_e >= math.log(1.0 / policy.alpha)}
    for r in results:
        r.e_threshold = (1.0 if r.muted else len(deciding)) / policy.alpha
        if id(r) in failing:
            if r.kind == "rate":
                worse = "fails more often than the baseline"
                worse += f" by more than {_pts(policy.min_effect)}" if policy.min_effect else ""
            else:
                worse = f"values above {1.0 + policy.min_relative_shift:g}x the baseline's"
            r.outcome, r.reason = "FAIL", f"canary {worse} (e={r.e_value:.3g}, p={r.p_value:.2g})"
        else:
            _pass_or_wait(r, policy, r.e_threshold)


def judge(
    samples: Sequence[MetricSamples],
    policy: VerdictPolicy,
    forced: tuple[Sequence[Forced], Mapping[str, Forced]] | None = None,
) -> Verdict:
    """Judge a deploy from per-metric samples (see the module docstring for the steps).

    ``forced``: the canary cells' and the baseline cells' (by name) forced log-probabilities, for
    the ``equivalence.forced`` metric (:mod:`canary.verdicts.equivalence`), which takes its share
    of ``alpha`` from the others.
    """
    from canary.verdicts.equivalence import forced_result

    results = [_evidence(s, policy) for s in sorted(samples, key=lambda s: s.metric)]
    others = sum(not r.muted for r in results)
    equivalence = forced_result(forced[0], forced[1], policy, others) if forced else None
    share = policy.alpha * others / (others + 1) if equivalence is not None else policy.alpha
    _decide_metrics(results, policy.model_copy(update={"alpha": share}))
    results += [equivalence] if equivalence is not None else []
    deciding = [r for r in results if not r.muted]
    failed_critical = [r.metric for r in deciding if r.critical and r.outcome == "FAIL"]
    failed_other = [r.metric for r in deciding if not r.critical and r.outcome == "FAIL"]
    if failed_critical:
        return Verdict("FAIL", f"critical metric failed: {', '.join(failed_critical)}", results)
    if len(failed_other) > policy.tolerated_failures:
        return Verdict("FAIL", f"metrics failed: {', '.join(failed_other)}", results)
    short_critical = [r.metric for r in deciding if r.critical and r.outcome == "INCONCLUSIVE"]
    if short_critical:
        reasons = "; ".join(f"{r.metric}: {r.reason}" for r in deciding if r.metric in short_critical)
        return Verdict("INCONCLUSIVE", f"not enough evidence for critical {reasons}", results)
    if not any(r.outcome == "PASS" for r in deciding):
        return Verdict("INCONCLUSIVE", "no metric has enough evidence either way", results)
    return Verdict("PASS", "no metric worse on the canary", results)


@dataclass(frozen=True)
class DeployState:
    """What :func:`advance` decides after one evaluation of a deploy."""

    status: Literal["running", "pass", "fail", "inconclusive"]
    reason: str


def advance(verdict: Verdict, window_over: bool) -> DeployState:
    """The deploy's status after an evaluation.

    A FAIL ends the deploy at once, at any look: its e-value threshold holds however often the
    deploy is looked at, so no repetition is needed. PASS never ends it early, because the canary
    must run its whole window; when the window is over, the last evaluation decides.
    """
    if verdict.outcome == "FAIL":
        return DeployState("fail", verdict.reason)
    if window_over:
        return DeployState(verdict.outcome.lower(), verdict.reason)  # type: ignore[arg-type]
    return DeployState("running", verdict.reason)
