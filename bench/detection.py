"""Detection benchmark: the product's detector against Wald's SPRT floor and a fixed-window judge.

Run: ``.venv/bin/python bench/detection.py``. Prints the machine, one block per fault, the healthy
false-alarm figures, resolution, verdicts under repeated looks, and a final JSON line. Everything
is seeded; nothing here is tuned to the answer.

One code path: every figure comes from the product's own functions, through
``bench/_detection_sim.py`` (``canary.detection.sequential.evaluate``, the very function
``self_candidate`` runs), the routing invariant's rule (one wrong-pool run is a finding),
``bench/_verdicts_sim.py`` (the product's ``judge``/``advance``), and one case end to end
through PostgreSQL and ``canary detect --once``.

Setup, decided before looking at any result:

- Faults: the postmortem's fault rates (healthy ``p0`` -> faulty ``p1``): corruption
  (unexpected script 0.1 % -> 1 %, 2 %, 5 %), top-k drop (argmax-conformance violation 0.2 % ->
  3 %, 10 %), misroute seen per pool with served-by evidence (wrong pool 0.0004 % -> f; the
  routing invariant) and misroute at the front door with quality only (wrong answers 5 % -> 5 % +
  0.25 f), for f = 0.8 % and 16 %.
- Error rates alpha = 0.001, beta = 0.01. Floor: Wald's ASN under H1 for the same rates.
- False-alarm budget: one false alarm per ``E0[N] / alpha`` healthy observations, the rate of
  Wald's SPRT run back to back on healthy data. The product detector gets that budget as its
  ``A``; so does the fixed-window judge.
- Product detector: the mixture Shiryaev-Roberts e-detector over the default grid of
  alternatives, not told ``p1``,
  one probe version with a long healthy history, started at zero when the fault begins.
- Fixed-window judge (classic automated canary analysis): consecutive windows of ``W`` probes,
  each compared with a fresh healthy baseline window of ``W`` probes by a one-sided Mann-Whitney
  U test, critical value set exactly so that each window's false-alarm probability is at most
  ``W alpha / E0[N]``; ``W`` chosen in hindsight from ``{0.5, 1, 2, 4} x ASN`` (its best case).
  Its windows start with the fault (``slower_than_fixed_window``), its best case again, and, as
  a judge on its own clock runs, at a uniformly random probe of a window
  (``slower_than_fixed_window_random_phase``).
- Delay: observations after the fault starts until the alarm, median over SEEDS seeds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._detection_sim import (  # noqa: E402
    PASS_S,
    PROBES,
    detection_delays,
    healthy_fleet,
    resolution_delays,
)
from bench._pg_case import postgres_case  # noqa: E402
from bench._sprt import wald_asn  # noqa: E402
from canary.config.sections import DetectionSpec  # noqa: E402
from canary.detection.decisions import is_invariant  # noqa: E402

ALPHA, BETA = 0.001, 0.01
SEEDS = 101  # >= 20 asked; 101 keeps the medians' sampling error small and the run short
WINDOW_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)
ROOT_SEED = 20250825  # the day the corruption and top-k bugs appeared
HEALTHY_CELLS, HEALTHY_DAYS = 100, 20  # 2,000 cell-days per dependence structure


@dataclass(frozen=True)
class Fault:
    name: str
    p0: float
    p1: float
    what: str
    metric: str = "quality"


FAULTS = [
    Fault("corruption-1%", 0.001, 0.01, "unexpected-script rate 0.1 % -> 1 %"),
    Fault("corruption-2%", 0.001, 0.02, "unexpected-script rate 0.1 % -> 2 %"),
    Fault("corruption-5%", 0.001, 0.05, "unexpected-script rate 0.1 % -> 5 %"),
    Fault("topk-3%", 0.002, 0.03, "argmax-conformance violations 0.2 % -> 3 %"),
    Fault("topk-10%", 0.002, 0.10, "argmax-conformance violations 0.2 % -> 10 %"),
    Fault(
        "misroute-served-by-0.8%", 4e-6, 0.008, "per pool, served-by wrong pool 0.0004 % -> 0.8 %", "routing"
    ),
    Fault("misroute-served-by-16%", 4e-6, 0.16, "per pool, served-by wrong pool 0.0004 % -> 16 %", "routing"),
    Fault("misroute-front-door-0.8%", 0.05, 0.05 + 0.008 * 0.25, "front door, wrong answers 5 % -> 5.2 %"),
    Fault("misroute-front-door-16%", 0.05, 0.05 + 0.16 * 0.25, "front door, wrong answers 5 % -> 9 %"),
]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}"
    )


def mw_z(k: npt.NDArray[np.float64], b: npt.NDArray[np.float64], n1: int, n2: int) -> npt.NDArray[np.float64]:
    """One-sided ("greater") Mann-Whitney z for binary samples: ``k`` of ``n1`` canary and ``b`` of ``n2``
    baseline failures; scipy's tie correction and continuity correction, 0 when all values tie."""
    u1 = k * (n2 - b) + 0.5 * (k * b + (n1 - k) * (n2 - b))
    big_n = n1 + n2
    t1 = k + b
    t0 = big_n - t1
    ties = (t1**3 - t1 + t0**3 - t0) / (big_n * (big_n - 1.0))
    var = n1 * n2 / 12.0 * ((big_n + 1.0) - ties)
    out = np.zeros(np.broadcast(k, b).shape)
    np.divide(u1 - n1 * n2 / 2.0 - 0.5, np.sqrt(np.maximum(var, 0.0)), out=out, where=var > 0)
    return out


def check_mw_z_against_scipy() -> None:
    for k, b, n1, n2 in [(3, 0, 50, 50), (5, 2, 40, 60), (1, 1, 10, 10), (12, 4, 200, 100)]:
        x = np.r_[np.ones(k), np.zeros(n1 - k)]
        y = np.r_[np.ones(b), np.zeros(n2 - b)]
        ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic").pvalue
        ours = float(stats.norm.sf(mw_z(np.array(k, float), np.array(b, float), n1, n2)))
        assert math.isclose(ours, ref, rel_tol=1e-9), (k, b, n1, n2, ours, ref)


def mw_critical_z(p0: float, w: int, level: float) -> float:
    """Smallest critical z with ``P0(z >= crit) <= level`` when both windows are Bin(w, p0)."""
    lo, hi = int(stats.binom.ppf(1e-13, w, p0)), int(stats.binom.isf(1e-13, w, p0)) + 1
    counts = np.arange(lo, hi + 1, dtype=np.float64)
    pmf = stats.binom.pmf(counts, w, p0)
    z = mw_z(counts[:, None], counts[None, :], w, w).ravel()
    mass = np.multiply.outer(pmf, pmf).ravel()
    order = np.argsort(-z, kind="stable")
    z_sorted, tail = z[order], np.cumsum(mass[order])
    # Group equal statistics: a region {z >= t} must include every table with z == t.
    last_of_group = np.r_[z_sorted[1:] < z_sorted[:-1] - 1e-12, True]
    ok = last_of_group & (tail <= level)
    if not ok.any():
        return math.inf
    return float(z_sorted[np.nonzero(ok)[0][-1]])


def judge_delays(
    p0: float, p1: float, w: int, crit: float, max_probes: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Probes until the first window whose Mann-Whitney z reaches ``crit`` (windows aligned at the fault)."""
    windows = max(1, math.ceil(max_probes / w))
    k = rng.binomial(w, p1, size=(SEEDS, windows)).astype(np.float64)
    b = rng.binomial(w, p0, size=(SEEDS, windows)).astype(np.float64)
    reject = mw_z(k, b, w, w) >= crit
    return np.where(reject.any(axis=1), (reject.argmax(axis=1) + 1.0) * w, np.inf)


def judge_delays_random_phase(
    p0: float, p1: float, w: int, crit: float, max_probes: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """As :func:`judge_delays`, with the fault starting at a uniformly random probe of a window:
    a judge runs on its own clock, so its first faulty window is partly healthy."""
    windows = max(1, math.ceil(max_probes / w)) + 1
    u = rng.integers(0, w, SEEDS)  # the first window's healthy probes, before the fault
    k = rng.binomial(w, p1, size=(SEEDS, windows)).astype(np.float64)
    k[:, 0] = rng.binomial(u, p0) + rng.binomial(w - u, p1)
    b = rng.binomial(w, p0, size=(SEEDS, windows)).astype(np.float64)
    reject = mw_z(k, b, w, w) >= crit
    return np.where(reject.any(axis=1), (reject.argmax(axis=1) + 1.0) * w - u, np.inf)


@dataclass(frozen=True)
class FaultResult:
    p0: float
    p1: float
    detector: str
    wald_asn_h1: float
    wald_asn_h0: float
    budget_observations_per_false_alarm: float
    median: float
    p90: float
    ratio_to_sprt: float
    judge_median: float
    judge_window: int
    judge_all_windows: dict[str, float]
    judge_missed_share: float
    slower_than_judge: bool
    judge_random_phase_median: float
    judge_random_phase_window: int
    slower_than_judge_random_phase: bool


def product_delays(
    fault: Fault, budget: float, rng: np.random.Generator
) -> tuple[str, npt.NDArray[np.float64]]:
    """The product's delay: the routing invariant (first wrong-pool run) or the sequential self test."""
    if is_invariant(fault.metric, DetectionSpec()):
        return "invariant", rng.geometric(fault.p1, SEEDS).astype(np.float64)
    return "mixture Shiryaev-Roberts", detection_delays(fault.p0, fault.p1, budget, SEEDS, rng)


def run_fault(fault: Fault, seed: np.random.SeedSequence) -> FaultResult:
    asn = wald_asn(fault.p0, fault.p1, ALPHA, BETA)
    budget = asn.under_h0 / ALPHA
    product_rng, judge_rng = (np.random.default_rng(s) for s in seed.spawn(2))
    detector, delays = product_delays(fault, budget, product_rng)
    median = float(np.median(delays))
    phase_rng = np.random.default_rng(seed.spawn(1)[0])  # after the two above: theirs unchanged
    judges, phased = [], []
    for mult in WINDOW_MULTIPLIERS:
        w = max(1, round(mult * asn.under_h1))
        crit = mw_critical_z(fault.p0, w, min(1.0, w / budget))
        found = judge_delays(fault.p0, fault.p1, w, crit, 200 * asn.under_h1, judge_rng)
        judges.append((float(np.median(found)), w, float(np.mean(np.isinf(found)))))
        found = judge_delays_random_phase(fault.p0, fault.p1, w, crit, 200 * asn.under_h1, phase_rng)
        phased.append((float(np.median(found)), w))
    best = min(judges, key=lambda j: j[0])
    best_phased = min(phased, key=lambda j: j[0])
    return FaultResult(
        p0=fault.p0,
        p1=fault.p1,
        detector=detector,
        wald_asn_h1=asn.under_h1,
        wald_asn_h0=asn.under_h0,
        budget_observations_per_false_alarm=budget,
        median=median,
        p90=float(np.quantile(delays, 0.9)),
        ratio_to_sprt=median / asn.under_h1,
        judge_median=best[0],
        judge_window=best[1],
        judge_all_windows={str(j[1]): j[0] for j in judges},
        judge_missed_share=best[2],
        # Slower only when strictly slower: a tie (both at the first wrong-pool run) is not.
        slower_than_judge=median > best[0],
        judge_random_phase_median=best_phased[0],
        judge_random_phase_window=best_phased[1],
        slower_than_judge_random_phase=median > best_phased[0],
    )


def fmt(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def print_fault(fault: Fault, r: FaultResult) -> None:
    windows = ", ".join(f"W={w}: {fmt(d)}" for w, d in r.judge_all_windows.items())
    print(f"\n== {fault.name}: {fault.what} (p0={fault.p0:g}, p1={fault.p1:g}) [{r.detector}]")
    print(f"  Wald SPRT ASN under H1 / H0        {fmt(r.wald_asn_h1)} / {fmt(r.wald_asn_h0)}")
    print(f"  budget (healthy obs per false alarm) {fmt(r.budget_observations_per_false_alarm)}")
    print(f"  product median (p90) delay         {fmt(r.median)} ({fmt(r.p90)})")
    print(f"  ratio of median to SPRT ASN        {r.ratio_to_sprt:.2f}")
    print(f"  fixed-window Mann-Whitney median   {fmt(r.judge_median)} (best W={r.judge_window})")
    print(f"  judge median per window W          {windows}")
    print(f"  slower than the judge              {r.slower_than_judge}")
    print(
        f"  judge on its own clock (random phase) median {fmt(r.judge_random_phase_median)} "
        f"(best W={r.judge_random_phase_window}); slower: {r.slower_than_judge_random_phase}"
    )


def healthy_figures(seed: int) -> dict[str, float]:
    """False incidents per 1,000 healthy cell-days at the default budget and at a 1,000x looser one."""
    out: dict[str, float] = {}
    for clustered in (True, False):
        name = "clustered" if clustered else "independent"
        for budget in (1.0, 1000.0):
            spec = DetectionSpec(false_alarms_per_cell_year=budget)
            r = healthy_fleet(HEALTHY_CELLS, HEALTHY_DAYS, clustered, spec, seed)
            print(
                f"  {name:<11} budget {budget:>6g}/cell-year: {r.false_incidents} false incidents in "
                f"{r.cell_days:,.0f} cell-days ({r.per_1000_cell_days:.2f} per 1,000; the budget allows "
                f"{1000 * r.allowed / r.cell_days:.2f})"
            )
            out[f"{name}_{budget:g}"] = r.per_1000_cell_days
    return out


def resolve_figures(rng: np.random.Generator) -> float:
    """Median detection windows (``window_s`` at the default cadence) from fault removal to clearance."""
    per_window = DetectionSpec().window_s / PASS_S * PROBES
    medians = []
    for fault in FAULTS:
        if is_invariant(fault.metric, DetectionSpec()) or fault.p1 - fault.p0 < 0.01:
            continue
        delays = resolution_delays(fault.p0, fault.p1, 600, 41, rng)
        m = float(np.nanmedian(delays)) / per_window
        medians.append(m)
        print(f"  {fault.name:<26} median {m:.2f} windows ({per_window:.0f} observations each)")
    return float(np.median(medians))


def verdict_figures() -> dict[str, float]:
    try:
        from bench._verdicts_sim import simulate_verdicts
    except ImportError:  # the verdict simulation lands separately
        return {}
    return simulate_verdicts()


def main() -> None:
    started = time.perf_counter()
    print(machine())
    print(
        f"alpha={ALPHA} beta={BETA} seeds={SEEDS} root_seed={ROOT_SEED}; "
        "delays in observations after the fault"
    )
    check_mw_z_against_scipy()
    seeds = np.random.SeedSequence(ROOT_SEED).spawn(len(FAULTS) + 1)
    results: dict[str, FaultResult] = {}
    for fault, seed in zip(FAULTS, seeds, strict=False):
        results[fault.name] = run_fault(fault, seed)
        print_fault(fault, results[fault.name])
    worst = max(r.ratio_to_sprt for r in results.values())
    slower = [name for name, r in results.items() if r.slower_than_judge]
    slower_phased = [name for name, r in results.items() if r.slower_than_judge_random_phase]
    print("\n== healthy cells (10 probe versions at 0-100 %, 3 metrics, repeats of 5, a version change)")
    healthy = healthy_figures(ROOT_SEED)
    print("\n== resolution after the fault is removed")
    resolve = resolve_figures(np.random.default_rng(seeds[-1]))
    print("\n== verdicts under repeated looks")
    verdicts = verdict_figures()
    for key, value in verdicts.items():
        print(f"  {key}: {value}")
    print("\n== one case through PostgreSQL and canary detect")
    pg = postgres_case()
    for key, value in pg.items():
        print(f"  {key}: {value}")
    print(f"\nworst ratio to SPRT {worst:.2f}; slower than the fixed-window judge on: {slower or 'none'}")
    summary = {
        "bench": "detection",
        "alpha": ALPHA,
        "beta": BETA,
        "seeds": SEEDS,
        "faults": {name: asdict(r) for name, r in results.items()},
        "worst_ratio_to_sprt": round(worst, 3),
        "slower_than_fixed_window": slower,
        "slower_than_fixed_window_random_phase": slower_phased,
        "false_alarms_per_1000_cell_days_clustered": healthy["clustered_1"],
        "false_alarms_per_1000_cell_days_independent": healthy["independent_1"],
        "false_alarms_per_1000_cell_days_at_1000x_budget": {
            "clustered": healthy["clustered_1000"],
            "independent": healthy["independent_1000"],
        },
        "median_resolve_windows": round(resolve, 3),
        "verdict_false_fail_rate_repeated_looks": verdicts.get("verdict_false_fail_rate_repeated_looks"),
        "verdict_power": verdicts.get("verdict_power"),
        "verdict_order_false_fail_rate_repeated_looks": verdicts.get(
            "verdict_order_false_fail_rate_repeated_looks"
        ),
        "verdict_order_power": verdicts.get("verdict_order_power"),
        "kayenta_case_fails": verdicts.get("kayenta_case_fails"),
        "postgres_case": pg,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
