"""Simulated streams through the product's own detection functions (no parallel implementation).

Used by ``bench/detection.py`` and by ``tests/detection/test_budget.py``. A simulated cell probes
``PROBES`` probe versions every ``PASS_S`` seconds, each ``REPEATS`` times per pass, for several
quality metrics; the detector sees one observation per (pass, probe version), exactly as
``canary.detection.queries.streams`` builds them from PostgreSQL. Everything is seeded.

The functions called are the product's: :func:`canary.detection.sequential.evaluate` (null
rates, the threshold from the budget, the detector and its incidents), the very function
``self_candidate`` runs, with ``A`` from :func:`~canary.detection.sequential.observations_per_alarm`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canary.config.sections import DetectionSpec  # noqa: E402
from canary.detection.decisions import Counts, tests_per_cell  # noqa: E402
from canary.detection.sequential import (  # noqa: E402
    Incident,
    Stream,
    evaluate,
    observations_per_alarm,
)

PASS_S = 300.0
PROBES = 10
REPEATS = 5
METRICS = 3
BASELINE_PASSES = 7 * 288  # a week of history per probe version before the simulation starts
# Per-probe healthy failure rates from 0 % to 100 %: a model may always fail one probe, never another.
PROBE_RATES = np.array([0.0, 0.0, 0.001, 0.002, 0.01, 0.02, 0.05, 0.2, 0.5, 1.0])


@dataclass(frozen=True)
class Outcome:
    """What the detector did on one stream: its incidents and the observations it saw."""

    incidents: list[Incident]
    observations: int
    alarms: list[int]


def cluster_failed(
    rates: npt.NDArray[np.float64], passes: int, clustered: bool, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """Observations (pass-major, probe-minor): did any of the pass's repeats of the probe fail?

    ``clustered``: the repeats fail together (a temperature-0 probe on a server that is not
    batch-invariant), each pass's cluster failing at the probe's rate. Otherwise each repeat
    fails on its own at that rate.
    """
    if clustered:
        return rng.random((passes, rates.size)) < rates
    return (rng.random((passes, rates.size, REPEATS)) < rates[:, None]).any(axis=2)


def run_stream(
    failed: npt.NDArray[np.bool_],
    strata: npt.NDArray[np.int64],
    baseline: dict[int, Counts],
    spec: DetectionSpec,
    observations_per_false_alarm: float | None = None,
) -> Outcome:
    """One whole stream through the product's detection chain, as ``self_candidate`` runs it."""
    at = np.arange(failed.size, dtype=np.float64) * (PASS_S / PROBES)
    ones = np.ones(failed.size, dtype=np.int64)
    batch = np.arange(failed.size, dtype=np.int64) // PROBES
    stream = Stream(1, "sim/p/a", "metric", at, strata, ones, failed.astype(np.int64), baseline, batch)
    a = observations_per_false_alarm
    if a is None:
        a = observations_per_alarm(stream, spec, float(at[-1]), tests_per_cell(METRICS))
    result = evaluate(stream, spec, a)
    if result is None:
        return Outcome([], 0, [])
    return Outcome(result.incidents, int(result.failed.size), result.run.alarms)


def healthy_cell(
    days: float,
    clustered: bool,
    version_change: bool,
    spec: DetectionSpec,
    rng: np.random.Generator,
) -> int:
    """False incidents of one healthy cell (all its metrics) over ``days``.

    Each metric gets the per-probe rates in a random order; with ``version_change`` half the
    probes change version halfway, so the new versions start a baseline of their own.
    """
    passes = int(days * 86400 / PASS_S)
    found = 0
    for _ in range(METRICS):
        rates = rng.permutation(PROBE_RATES)
        cluster_rates = rates if clustered else 1.0 - (1.0 - rates) ** REPEATS
        failed = cluster_failed(rates, passes, clustered, rng)
        strata = np.tile(np.arange(PROBES, dtype=np.int64), (passes, 1))
        if version_change:
            strata[passes // 2 :, : PROBES // 2] += 100  # new probe versions, no history yet
        baseline = {
            k: Counts(int(rng.binomial(BASELINE_PASSES, cluster_rates[k])), BASELINE_PASSES)
            for k in range(PROBES)
        }
        found += len(run_stream(failed.ravel(), strata.ravel(), baseline, spec).incidents)
    return found


@dataclass(frozen=True)
class HealthyResult:
    cell_days: float
    false_incidents: int
    allowed: float  # what the budget allows over the same cell-days

    @property
    def per_1000_cell_days(self) -> float:
        return 1000.0 * self.false_incidents / self.cell_days


def healthy_fleet(
    cells: int, days: float, clustered: bool, spec: DetectionSpec, seed: int, version_change: bool = True
) -> HealthyResult:
    """False incidents of the self test over ``cells`` healthy cells for ``days`` each.

    The budget covers a cell's every test; the self tests' share is ``METRICS`` of its
    ``tests_per_cell(METRICS)`` tests.
    """
    rng = np.random.default_rng(seed)
    found = sum(healthy_cell(days, clustered, version_change, spec, rng) for _ in range(cells))
    share = METRICS / tests_per_cell(METRICS)
    allowed = spec.false_alarms_per_cell_year * share * cells * days / 365.25
    return HealthyResult(cells * days, found, allowed)


def detection_delays(
    p0: float, p1: float, observations_per_false_alarm: float, seeds: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Observations after a fault starts until the product detector alarms, one per seed.

    One probe version with a long healthy baseline at ``p0``; the fault raises its rate to
    ``p1`` from the first observation (Lorden's worst case: the statistic starts at zero).
    """
    spec = DetectionSpec()
    baseline = {0: Counts(int(round(p0 * 1_000_000)), 1_000_000)}
    out = np.full(seeds, np.inf)
    for i in range(seeds):
        horizon = 4096
        while True:
            failed = rng.random(horizon) < p1
            outcome = run_stream(
                failed, np.zeros(horizon, np.int64), baseline, spec, observations_per_false_alarm
            )
            if outcome.alarms:
                out[i] = outcome.alarms[0] + 1
                break
            if horizon >= 1 << 20:  # ~1M observations: years of probing at the front door
                break
            horizon *= 4
    return out


def resolution_delays(
    p0: float, p1: float, fault_observations: int, seeds: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Observations from a fault's removal until the product marks its incident cleared."""
    spec = DetectionSpec()
    baseline = {0: Counts(int(round(p0 * 1_000_000)), 1_000_000)}
    out = np.full(seeds, np.nan)
    after = 20_000
    for i in range(seeds):
        failed = np.r_[rng.random(fault_observations) < p1, rng.random(after) < p0]
        n = failed.size
        result = run_stream(failed, np.zeros(n, np.int64), baseline, spec, 1e6)
        chain = [c for c in result.incidents if c.start < fault_observations]
        if chain and chain[-1].cleared_at is not None:
            out[i] = max(0, chain[-1].cleared_at - fault_observations)
        elif chain:
            out[i] = math.inf
    return out
