"""Detection benchmark: probes-to-detect of the canary's CUSUM vs Wald's SPRT floor and a fixed-window judge.

Run: ``.venv/bin/python bench/detection.py``. Prints the machine, one table per fault, and a final
JSON line. Everything is seeded; nothing here is tuned to the answer.

Setup, decided before looking at any result:

- Faults: Bernoulli failure streams at the postmortem's fault rates (healthy ``p0`` -> faulty ``p1``):
  corruption (unexpected script 0.1 % -> 1 %, 2 %, 5 %), top-k drop (argmax-conformance violation
  0.2 % -> 3 %, 10 %), misroute seen per pool with served-by evidence (wrong pool 0.0004 % -> f, the
  lowest prevalence the postmortem reports is the floor) and misroute at the front door with quality
  only (wrong answers 5 % -> 5 % + 0.25 f; 5 % is the rate that reproduces the design doc's 163,000),
  for f = 0.8 % and 16 %.
- Error rates alpha = 0.001, beta = 0.01. Floor: Wald's ASN under H1 for the same rates.
- False-alarm budget: the rate of Wald's SPRT run back to back on healthy data, one false alarm per
  ``E0[N] / alpha`` healthy probes (Page 1954: the CUSUM is that SPRT restarted at its lower bound).
  Both detectors get exactly this budget.
- Canary detector: ``BernoulliCUSUM(p0, p1, h)`` with ``h = cusum_threshold_for_arl(p0, p1, E0[N]/alpha)``,
  started at zero when the fault begins (Lorden's worst case). Like the SPRT floor it knows ``p1``.
- Fixed-window judge (classic automated canary analysis): consecutive windows of ``W`` probes, each
  compared with a fresh healthy baseline window of ``W`` probes by a one-sided Mann-Whitney U test
  (scipy's tie-corrected normal statistic with continuity correction). Its critical value is set
  exactly, by enumerating the binomial null, so that each window's false-alarm probability is at most
  ``W alpha / E0[N]``: the same false alarms per healthy probe over any horizon. It is given its best
  case: windows aligned with the fault's start, and ``W`` chosen in hindsight from
  ``{0.5, 1, 2, 4} x ASN`` as the one with the smallest median delay.
- Delay: probes after the fault starts until the alarm, median over SEEDS seeds.
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

from canary.stats import cusum_arl, cusum_paths, cusum_threshold_for_arl, wald_asn  # noqa: E402

ALPHA, BETA = 0.001, 0.01
SEEDS = 101  # >= 20 asked; 101 keeps the medians' sampling error small and the run short
WINDOW_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)
CHUNK = 1 << 15
ROOT_SEED = 20250825  # the day the corruption and top-k bugs appeared


@dataclass(frozen=True)
class Fault:
    name: str
    p0: float
    p1: float
    what: str


FAULTS = [
    Fault("corruption-1%", 0.001, 0.01, "unexpected-script rate 0.1 % -> 1 %"),
    Fault("corruption-2%", 0.001, 0.02, "unexpected-script rate 0.1 % -> 2 %"),
    Fault("corruption-5%", 0.001, 0.05, "unexpected-script rate 0.1 % -> 5 %"),
    Fault("topk-3%", 0.002, 0.03, "argmax-conformance violations 0.2 % -> 3 %"),
    Fault("topk-10%", 0.002, 0.10, "argmax-conformance violations 0.2 % -> 10 %"),
    Fault("misroute-served-by-0.8%", 4e-6, 0.008, "per pool, served-by wrong pool 0.0004 % -> 0.8 %"),
    Fault("misroute-served-by-16%", 4e-6, 0.16, "per pool, served-by wrong pool 0.0004 % -> 16 %"),
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


def cusum_delays(p0: float, p1: float, h: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Probes until the CUSUM reaches ``h`` on streams failing at ``p1``, one per seed, in chunks."""
    delay = np.full(SEEDS, np.inf)
    start = np.zeros(SEEDS)
    done = 0
    while np.isinf(delay).any():
        live = np.isinf(delay)
        paths = cusum_paths(rng.random((int(live.sum()), CHUNK)) < p1, p0, p1, start[live])
        hit = paths >= h
        first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1 + done, np.inf)
        delay[live] = first
        start[live] = paths[:, -1]
        done += CHUNK
    return delay


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


@dataclass(frozen=True)
class FaultResult:
    p0: float
    p1: float
    wald_asn_h1: float
    wald_asn_h0: float
    arl0_budget: float
    cusum_h: float
    cusum_arl0: float
    cusum_mean_delay_markov: float
    cusum_median: float
    cusum_p90: float
    cusum_mean: float
    ratio_to_sprt: float
    judge_median: float
    judge_mean: float
    judge_window: int
    judge_all_windows: dict[str, float]
    judge_missed_share: float
    beats_fixed_window: bool
    ties_fixed_window: bool


def run_fault(fault: Fault, seed: np.random.SeedSequence) -> FaultResult:
    asn = wald_asn(fault.p0, fault.p1, ALPHA, BETA)
    arl0 = asn.under_h0 / ALPHA
    h = cusum_threshold_for_arl(fault.p0, fault.p1, arl0)
    cusum_rng, judge_rng = (np.random.default_rng(s) for s in seed.spawn(2))
    cusum = cusum_delays(fault.p0, fault.p1, h, cusum_rng)
    cusum_median = float(np.median(cusum))
    judges = []
    for mult in WINDOW_MULTIPLIERS:
        w = max(1, round(mult * asn.under_h1))
        crit = mw_critical_z(fault.p0, w, min(1.0, w / arl0))
        delays = judge_delays(fault.p0, fault.p1, w, crit, 200 * asn.under_h1, judge_rng)
        judges.append((float(np.median(delays)), w, float(np.mean(delays)), float(np.mean(np.isinf(delays)))))
    best = min(judges, key=lambda j: j[0])
    return FaultResult(
        p0=fault.p0,
        p1=fault.p1,
        wald_asn_h1=asn.under_h1,
        wald_asn_h0=asn.under_h0,
        arl0_budget=arl0,
        cusum_h=h,
        cusum_arl0=cusum_arl(fault.p0, fault.p1, h),
        cusum_mean_delay_markov=cusum_arl(fault.p0, fault.p1, h, rate=fault.p1),
        cusum_median=cusum_median,
        cusum_p90=float(np.quantile(cusum, 0.9)),
        cusum_mean=float(np.mean(cusum)),
        ratio_to_sprt=cusum_median / asn.under_h1,
        judge_median=best[0],
        judge_mean=best[2],
        judge_window=best[1],
        judge_all_windows={str(j[1]): j[0] for j in judges},
        judge_missed_share=best[3],
        # Strictly faster; an equal median is reported as a tie, not as a win.
        beats_fixed_window=cusum_median < best[0],
        ties_fixed_window=cusum_median == best[0],
    )


def fmt(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def print_fault(fault: Fault, r: FaultResult) -> None:
    windows = ", ".join(f"W={w}: {fmt(d)}" for w, d in r.judge_all_windows.items())
    verdict = "tie" if r.ties_fixed_window else str(r.beats_fixed_window)
    print(f"\n== {fault.name}: {fault.what} (p0={fault.p0:g}, p1={fault.p1:g})")
    print(f"  Wald SPRT ASN under H1 / H0        {fmt(r.wald_asn_h1)} / {fmt(r.wald_asn_h0)}")
    print(f"  false-alarm budget (ARL0)          {fmt(r.arl0_budget)} healthy probes per false alarm")
    print(f"  CUSUM threshold h, its ARL0        {r.cusum_h:.3f}, {fmt(r.cusum_arl0)} (Markov chain)")
    print(f"  CUSUM median (p90) delay           {fmt(r.cusum_median)} ({fmt(r.cusum_p90)})")
    print(f"  CUSUM mean delay: simulated/Markov {fmt(r.cusum_mean)} / {fmt(r.cusum_mean_delay_markov)}")
    print(f"  ratio of median to SPRT ASN        {r.ratio_to_sprt:.2f}")
    print(
        f"  fixed-window Mann-Whitney median   {fmt(r.judge_median)} "
        f"(best W={r.judge_window}; mean {fmt(r.judge_mean)})"
    )
    print(f"  judge median per window W          {windows}")
    print(f"  CUSUM faster than the judge        {verdict}")


def main() -> None:
    started = time.perf_counter()
    print(machine())
    print(f"alpha={ALPHA} beta={BETA} seeds={SEEDS} root_seed={ROOT_SEED}; delays in probes after the fault")
    check_mw_z_against_scipy()
    results: dict[str, FaultResult] = {}
    for fault, seed in zip(FAULTS, np.random.SeedSequence(ROOT_SEED).spawn(len(FAULTS)), strict=True):
        results[fault.name] = run_fault(fault, seed)
        print_fault(fault, results[fault.name])
    worst = max(r.ratio_to_sprt for r in results.values())
    beats_all = all(r.beats_fixed_window for r in results.values())
    no_slower = all(r.beats_fixed_window or r.ties_fixed_window for r in results.values())
    print(
        f"\nworst ratio to SPRT {worst:.2f} (within 2x: {worst <= 2.0}); strictly faster than the "
        f"fixed-window judge on all faults: {beats_all}; never slower: {no_slower}"
    )
    summary = {
        "bench": "detection",
        "alpha": ALPHA,
        "beta": BETA,
        "seeds": SEEDS,
        "faults": {name: asdict(r) for name, r in results.items()},
        "worst_ratio_to_sprt": round(worst, 3),
        "within_2x_of_sprt": worst <= 2.0,
        "beats_fixed_window_on_all": beats_all,
        "no_slower_than_fixed_window_on_all": no_slower,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
