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
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canary.config.sections import VerdictPolicy  # noqa: E402
from canary.stats.two_sample import rate_power, rate_sample_size  # noqa: E402
from canary.verdicts.judgement import MetricSamples, advance, judge  # noqa: E402

LOOKS = 60
RATES = (0.0, 0.02, 0.2)
METRIC = "unexpected_script"
SEED = 20261201


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
) -> dict[str, Any]:
    """False-FAIL rate under ``looks`` looks on identical sides, and power at the stated effect.

    Headline figures are the worst over the baseline rates (highest false-FAIL rate, lowest
    power), each with its Monte Carlo standard error; ``..._by_baseline_rate`` has them all, with
    the runs per side and, for comparison, the exact false-FAIL rate of one look at the end.
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
    return {
        "verdict_false_fail_rate_repeated_looks": round(worst_ff["rate"], 4),
        "verdict_false_fail_rate_repeated_looks_se": round(worst_ff["se"], 4),
        "verdict_power": round(worst_power["power"], 4),
        "verdict_power_se": round(worst_power["se"], 4),
        "verdict_alpha": policy.alpha,
        "verdict_stated_power": policy.power,
        "verdict_detect_effect": policy.detect_effect,
        "verdict_looks": looks,
        "verdict_false_fail_by_baseline_rate": false_fail,
        "verdict_power_by_baseline_rate": power,
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
        f"worst false FAIL {figures['verdict_false_fail_rate_repeated_looks']} ± "
        f"{figures['verdict_false_fail_rate_repeated_looks_se']}; worst power {figures['verdict_power']} ± "
        f"{figures['verdict_power_se']}; {figures['verdict_sim_seconds']} s"
    )
    print(json.dumps({"bench": "verdicts", **figures}))


if __name__ == "__main__":
    main()
