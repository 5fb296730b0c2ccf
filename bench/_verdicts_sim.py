"""Per-deploy verdicts watched while the deploy runs, through the product's own ``judge``/``advance``.

Used by ``bench/detection.py`` and runnable alone (``.venv/bin/python bench/_verdicts_sim.py``:
prints the figures, then one JSON line). Everything is seeded; nothing is tuned to the answer.

Setup, decided before looking at any result:

- One critical rate metric (``unexpected_script``), canary and baseline at one run each per
  step, under the default :class:`~canary.config.sections.VerdictPolicy` (alpha 0.05, power 0.8,
  ``detect_effect`` +10 pts, ``min_effect`` 0).
- Baseline rates 0 %, 2 % and 20 %. For each, the window holds ``N`` runs per side: the sample
  the product's test needs to detect +10 pts with power 0.8 at its last look
  (:func:`canary.stats.two_sample.rate_sample_size`), rounded up to a multiple of the looks.
- The verdict is evaluated ``LOOKS`` = 60 times, evenly spaced (every 30 s of a 30-minute
  window): :func:`canary.verdicts.judgement.judge` on the counts so far, then
  :func:`~canary.verdicts.judgement.advance`, stopping at the first FAIL as the service does.
- False FAIL: identical sides. Power: the canary's rate is the baseline's + ``detect_effect``;
  power is the share of deploys that FAIL. Monte Carlo standard errors are binomial,
  ``sqrt(r (1 - r) / reps)``.

The same for a continuous metric (``latency_ms``, not muted, judged alone; the test of stochastic
order, :mod:`canary.stats.stochastic_order`): the window holds the values a side the test needs to
detect ``detect_dominance`` with power 0.8 (:func:`~canary.stats.stochastic_order.dominance_sample_size`),
60 looks. False FAIL at the null's boundary (identical sides, ``min_relative_shift = 0``) for
lognormal values, heavy ties (Poisson(0.7): half the values 0), discrete values (1-5) and heavy tails
(|Cauchy|); power for a lognormal canary of dominance ``detect_dominance``. Kayenta's case (7 of
10 canary values at 100, 10 baseline values at 1, default tolerance 0.2) at 10 values a side and at
the window's size: ``kayenta_case_fails`` is true when both FAIL.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canary.config.sections import VerdictPolicy  # noqa: E402
from canary.stats.stochastic_order import dominance_sample_size, order_path  # noqa: E402
from canary.stats.two_sample import rate_power, rate_sample_size  # noqa: E402
from canary.verdicts.judgement import MetricSamples, advance, judge  # noqa: E402

LOOKS = 60
RATES = (0.0, 0.02, 0.2)
METRIC = "unexpected_script"
SEED = 20261201
FloatArray = npt.NDArray[np.float64]


ORDER_METRIC = "latency_ms"
ORDER_NULLS: dict[str, Callable[[np.random.Generator, int], FloatArray]] = {
    "lognormal": lambda rng, n: rng.lognormal(5.0, 0.5, n),
    "heavy ties": lambda rng, n: rng.poisson(0.7, n).astype(np.float64),
    "discrete 1-5": lambda rng, n: rng.integers(1, 6, n).astype(np.float64),
    "heavy tails": lambda rng, n: np.abs(rng.standard_cauchy(n)),
}
KAYENTA = ((100.0,) * 7 + (1.0,) * 3, (1.0,) * 10)


def window_runs(base_rate: float, policy: VerdictPolicy, looks: int = LOOKS) -> int:
    """Runs per side in the window: what the test needs at ``detect_effect``, a multiple of ``looks``."""
    n = rate_sample_size(
        base_rate, policy.detect_effect, 1.0 / policy.alpha, policy.power,
        margin=policy.min_effect, effect=policy.detect_effect,
    )  # fmt: skip
    return looks * math.ceil(n / looks)


def deploy_outcome(
    canary_rate: float,
    base_rate: float,
    runs: int,
    looks: int,
    policy: VerdictPolicy,
    rng: np.random.Generator,
) -> str:
    """One simulated deploy: ``looks`` evaluations of the growing counts; the final status."""
    step = runs // looks
    cf = np.cumsum(rng.binomial(step, canary_rate, looks))
    bf = np.cumsum(rng.binomial(step, base_rate, looks))
    for i in range(looks):
        n = step * (i + 1)
        verdict = judge([MetricSamples(METRIC, int(cf[i]), n, int(bf[i]), n)], policy)
        state = advance(verdict, window_over=i == looks - 1)
        if state.status != "running":
            return state.status
    raise AssertionError("the last look ends every deploy")  # pragma: no cover


def order_window(policy: VerdictPolicy) -> int:
    """Values per side: what the order test needs for ``detect_dominance`` at its last look."""
    return dominance_sample_size(policy.detect_dominance, 1.0 / policy.alpha, policy.power)


def order_outcome(
    canary: FloatArray, baseline: FloatArray, looks: int, policy: VerdictPolicy, every_look: bool = False
) -> str:
    """One simulated deploy of a continuous metric, judged alone: ``looks`` evenly spaced evaluations
    of the growing values, the last at all of them; the final status.

    With ``every_look`` each look is a ``judge``/``advance`` call. Without, the product's own
    e-process (:func:`~canary.stats.stochastic_order.order_path`, the same value ``judge`` computes
    at each prefix) finds the first look at or over the lone metric's threshold ``1/alpha``, and
    ``judge``/``advance`` run at that look, or at the last one: the same outcome (a look under the
    threshold neither FAILs nor ends the window), checked in tests/service/test_verdicts.py.
    """
    values = min(canary.size, baseline.size)
    ns = [math.ceil(values * (i + 1) / looks) for i in range(looks)]
    if every_look:
        chosen = range(looks)
    else:
        path = order_path(canary[:values], baseline[:values], policy.min_relative_shift)
        crossed = [i for i, n in enumerate(ns) if path[n - 1] >= math.log(1.0 / policy.alpha)]
        chosen = range(crossed[0] if crossed else looks - 1, looks)
    for i in chosen:
        sample = MetricSamples(
            ORDER_METRIC, canary_values=tuple(canary[: ns[i]]), baseline_values=tuple(baseline[: ns[i]])
        )
        state = advance(judge([sample], policy), window_over=i == looks - 1)
        if state.status != "running":
            return state.status
    raise AssertionError("the last look ends every deploy")  # pragma: no cover


def kayenta_outcomes(policy: VerdictPolicy, values: int) -> tuple[str, str]:
    """Kayenta's case judged at 10 values a side and scaled to ``values`` a side (same shares)."""
    canary, baseline = KAYENTA
    small = judge([MetricSamples(ORDER_METRIC, canary_values=canary, baseline_values=baseline)], policy)
    k = math.ceil(values / 10)
    big = MetricSamples(ORDER_METRIC, canary_values=canary * k, baseline_values=baseline * k)
    return small.outcome, judge([big], policy).outcome


def simulate_order_verdicts(
    reps: int = 500, power_reps: int = 400, looks: int = LOOKS, seed: int = SEED + 1
) -> dict[str, Any]:
    """False-FAIL rates under ``looks`` looks (every null case), power at ``detect_dominance``, Kayenta."""
    started = time.perf_counter()
    boundary = VerdictPolicy(muted_metrics=(), min_relative_shift=0.0)
    values = order_window(boundary)
    streams = iter(np.random.SeedSequence(seed).spawn(len(ORDER_NULLS) + 1))
    false_fail: dict[str, dict[str, float]] = {}
    for name, draw in ORDER_NULLS.items():
        rng = np.random.default_rng(next(streams))
        outcomes = [order_outcome(draw(rng, values), draw(rng, values), looks, boundary) for _ in range(reps)]
        rate, se = share(outcomes, "fail")
        passed, _ = share(outcomes, "pass")
        false_fail[name] = {
            "rate": rate, "se": se, "upper_95": upper_95(outcomes, "fail"), "healthy_pass_rate": passed,
        }  # fmt: skip
    # A lognormal canary with P(X > Y) - P(X < Y) = detect_dominance: log-scale shift sigma sqrt(2) z.
    sigma, delta = 0.5, boundary.detect_dominance
    mu = sigma * math.sqrt(2.0) * float(stats.norm.ppf(0.5 * (1.0 + delta)))
    rng = np.random.default_rng(next(streams))
    faulty = [
        order_outcome(rng.lognormal(mu, sigma, values), rng.lognormal(0.0, sigma, values), looks, boundary)
        for _ in range(power_reps)
    ]
    caught, caught_se = share(faulty, "fail")
    wrongly_passed, _ = share(faulty, "pass")
    kayenta_policy = VerdictPolicy(muted_metrics=())  # default tolerance 0.2, latency deciding
    kayenta_values = order_window(kayenta_policy)
    kayenta = kayenta_outcomes(kayenta_policy, kayenta_values)
    worst = max(false_fail.values(), key=lambda v: v["rate"])
    return {
        "verdict_order_false_fail_rate_repeated_looks": round(worst["rate"], 4),
        "verdict_order_false_fail_rate_repeated_looks_se": round(worst["se"], 4),
        "verdict_order_power": round(caught, 4),
        "verdict_order_power_se": round(caught_se, 4),
        "verdict_order_false_pass_rate": round(wrongly_passed, 4),
        "verdict_order_detect_dominance": delta,
        "verdict_order_values_per_side": values,
        "verdict_order_reps": reps,
        "verdict_order_power_reps": power_reps,
        "verdict_order_false_fail_by_case": false_fail,
        "kayenta_case_fails": kayenta == ("FAIL", "FAIL"),
        "kayenta_case_outcomes": {
            "10_values": kayenta[0],
            f"{10 * math.ceil(kayenta_values / 10)}_values": kayenta[1],
        },
        "verdict_order_sim_seconds": round(time.perf_counter() - started, 1),
    }


def share(outcomes: list[str], status: str) -> tuple[float, float]:
    """The share of deploys that ended with ``status``, and its Monte Carlo standard error."""
    r = sum(o == status for o in outcomes) / len(outcomes)
    return r, math.sqrt(r * (1.0 - r) / len(outcomes))


def upper_95(outcomes: list[str], status: str) -> float:
    """One-sided 95 % Clopper-Pearson upper bound on that share (meaningful when it is 0)."""
    k, n = sum(o == status for o in outcomes), len(outcomes)
    return 1.0 if k == n else float(stats.beta.ppf(0.95, k + 1, n - k))


def simulate_verdicts(
    reps: int = 500,
    power_reps: int = 250,
    looks: int = LOOKS,
    rates: tuple[float, ...] = RATES,
    seed: int = SEED,
    policy: VerdictPolicy | None = None,
    order: bool = True,
) -> dict[str, Any]:
    """False-FAIL rate under ``looks`` looks on identical sides, and power at the stated effect.

    Headline figures are the worst over the baseline rates and, with ``order``, the continuous
    metric's cases (highest false-FAIL rate, lowest power), each with its Monte Carlo standard
    error; ``verdict_rate_...`` and ``verdict_order_...`` are each test's own, and
    ``..._by_baseline_rate`` has the rates' all, with the runs per side and, for comparison, the
    exact false-FAIL rate of one look at the end.
    """
    policy = policy or VerdictPolicy()
    started = time.perf_counter()
    streams = iter(np.random.SeedSequence(seed).spawn(2 * len(rates)))
    false_fail: dict[str, dict[str, float]] = {}
    power: dict[str, dict[str, float]] = {}
    for p in rates:
        runs = window_runs(p, policy, looks)
        rng = np.random.default_rng(next(streams))
        healthy = [deploy_outcome(p, p, runs, looks, policy, rng) for _ in range(reps)]
        rate, se = share(healthy, "fail")
        one_look = rate_power(
            runs, runs, p, p, 1.0 / policy.alpha, margin=policy.min_effect, effect=policy.detect_effect
        )
        passed, _ = share(healthy, "pass")
        false_fail[str(p)] = {
            "rate": rate, "se": se, "upper_95": upper_95(healthy, "fail"), "one_look_rate": one_look,
            "healthy_pass_rate": passed, "runs_per_side": runs, "reps": reps,
        }  # fmt: skip
        rng = np.random.default_rng(next(streams))
        faulty = [
            deploy_outcome(p + policy.detect_effect, p, runs, looks, policy, rng) for _ in range(power_reps)
        ]
        caught, caught_se = share(faulty, "fail")
        wrongly_passed, _ = share(faulty, "pass")
        power[str(p)] = {
            "power": caught, "se": caught_se, "false_pass_rate": wrongly_passed,
            "runs_per_side": runs, "reps": power_reps,
        }  # fmt: skip
    worst_ff = max(false_fail.values(), key=lambda v: v["rate"])
    worst_power = min(power.values(), key=lambda v: v["power"])
    ordered = simulate_order_verdicts(looks=looks) if order else {}
    ff = max(
        [(worst_ff["rate"], worst_ff["se"])]
        + [
            (
                ordered["verdict_order_false_fail_rate_repeated_looks"],
                ordered["verdict_order_false_fail_rate_repeated_looks_se"],
            )
        ]
        * order
    )
    pw = min(
        [(worst_power["power"], worst_power["se"])]
        + [(ordered["verdict_order_power"], ordered["verdict_order_power_se"])] * order
    )
    return {
        "verdict_false_fail_rate_repeated_looks": round(ff[0], 4),
        "verdict_false_fail_rate_repeated_looks_se": round(ff[1], 4),
        "verdict_power": round(pw[0], 4),
        "verdict_power_se": round(pw[1], 4),
        "verdict_rate_false_fail_rate_repeated_looks": round(worst_ff["rate"], 4),
        "verdict_rate_power": round(worst_power["power"], 4),
        "verdict_alpha": policy.alpha,
        "verdict_stated_power": policy.power,
        "verdict_detect_effect": policy.detect_effect,
        "verdict_looks": looks,
        "verdict_false_fail_by_baseline_rate": false_fail,
        "verdict_power_by_baseline_rate": power,
        **ordered,
        "verdict_sim_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    from bench._common import print_machine

    print_machine()
    figures = simulate_verdicts()
    print(f"policy: alpha {figures['verdict_alpha']}, power {figures['verdict_stated_power']},")
    print(
        f"  detect_effect +{100 * figures['verdict_detect_effect']:.0f} pts; {figures['verdict_looks']} looks"
    )
    for p, v in figures["verdict_false_fail_by_baseline_rate"].items():
        print(
            f"  baseline {float(p):5.0%}  N={v['runs_per_side']:>5}/side  false FAIL {v['rate']:.4f}"
            f" ± {v['se']:.4f} (<= {v['upper_95']:.4f} at 95 %; one look {v['one_look_rate']:.2g});"
            f" healthy PASS {v['healthy_pass_rate']:.3f}"
        )
    effect = f"+{100 * figures['verdict_detect_effect']:.0f} pts"
    for p, v in figures["verdict_power_by_baseline_rate"].items():
        print(
            f"  baseline {float(p):5.0%}  {effect}: power {v['power']:.3f}"
            f" ± {v['se']:.3f}; false PASS {v['false_pass_rate']:.3f}"
        )
    print(
        f"continuous (stochastic order), {figures['verdict_order_values_per_side']} values/side, dominance"
        f" {figures['verdict_order_detect_dominance']}, tolerance 0:"
    )
    for case, v in figures["verdict_order_false_fail_by_case"].items():
        print(
            f"  {case:<13} false FAIL {v['rate']:.4f} ± {v['se']:.4f} (<= {v['upper_95']:.4f} at 95 %);"
            f" healthy PASS {v['healthy_pass_rate']:.3f}"
        )
    print(
        f"  lognormal of dominance {figures['verdict_order_detect_dominance']}: power"
        f" {figures['verdict_order_power']:.3f} ± {figures['verdict_order_power_se']:.3f};"
        f" false PASS {figures['verdict_order_false_pass_rate']:.3f}"
    )
    print(f"  Kayenta's case: {figures['kayenta_case_outcomes']} -> fails: {figures['kayenta_case_fails']}")
    print(
        f"worst false FAIL {figures['verdict_false_fail_rate_repeated_looks']} ± "
        f"{figures['verdict_false_fail_rate_repeated_looks_se']}; worst power {figures['verdict_power']} ± "
        f"{figures['verdict_power_se']}; {figures['verdict_sim_seconds']} s"
    )
    print(json.dumps({"bench": "verdicts", **figures}))


if __name__ == "__main__":
    main()
