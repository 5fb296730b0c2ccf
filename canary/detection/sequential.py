"""The self test: one (cell, metric) stream against its own history, within the false-alarm budget.

Pure: arrays in, a :class:`~canary.detection.decisions.Candidate` out. The unit of evidence is
one *observation* per (pass, probe version): failed when any of that pass's repeats of the probe
failed, because repeats of a temperature-0 probe on a server that is not batch-invariant fail
together. Each probe version is a stratum with its own healthy rate, the predictive rate of its own
history (self-starting: the baseline before the look-back plus the stratum's earlier
observations in it), frozen while an excursion lasts (:mod:`canary.detection.nulls`), so a probe
the model always fails neither hides nor fakes a change, a new probe version starts its own
baseline, and a fault does not become its own baseline while it is being detected. The detector
is the mixture Shiryaev-Roberts e-detector of :mod:`canary.stats.edetector`, with its threshold
derived from ``false_alarms_per_cell_year``.

An incident is *active* from an alarm until a detector of the change back to health reaches
``resolve_likelihood_ratio`` times the observations of one ``window_s`` (:func:`incidents`);
then it is over, and a new alarm is a new incident. Why this rule: evidence summed from the
last alarm must first outweigh the fault's observations between that alarm and the fault's
removal, which took up to five windows for a 2 % fault; summed over every start after the alarm,
it starts counting at the removal whatever came before, and a fault of the incident's size is
cleared in about one window (see the README for the measured bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from canary.config.sections import DetectionSpec
from canary.detection.decisions import YEAR_S, Candidate, Counts, Kind
from canary.detection.nulls import null_rates_of
from canary.stats import rate_difference_ci
from canary.stats.edetector import (
    DEFAULT_DELTAS,
    DetectorRun,
    kl_bernoulli,
    log_likelihood_ratios,
    log_shiryaev_roberts,
    run_detector,
    threshold_for_budget,
)
from canary.stats.rates import rate_ci

RESOLVE_CONFIDENCE = 0.9  # the effect an incident is resolved against: its 95 % lower bound


@dataclass(frozen=True)
class Stream:
    """One (cell, metric)'s observations over the look-back, oldest first, and each stratum's baseline.

    ``baseline`` maps a probe version to ``Counts(failing observations, observations)`` from
    before the look-back; ``runs``/``failures`` are the raw run counts behind each observation;
    ``batch`` numbers the passes (observations of one pass arrive together, in no meaningful
    order, so evidence that an incident is over is weighed at the end of a pass).
    """

    target_id: int
    cell: str
    metric: str
    at: npt.NDArray[np.float64]  # epoch seconds
    stratum: npt.NDArray[np.int64]
    runs: npt.NDArray[np.int64]
    failures: npt.NDArray[np.int64]
    baseline: Mapping[int, Counts]
    batch: npt.NDArray[np.int64] | None = None

    @property
    def failed(self) -> npt.NDArray[np.bool_]:
        return self.failures > 0


def null_rates(stream: Stream, spec: DetectionSpec) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each observation's healthy rate ``q0`` and whether its stratum had enough history before it.

    The stratum's predictive rate, frozen while an excursion lasts (:mod:`canary.detection.nulls`).
    """
    return null_rates_of(stream.at, stream.failed, stream.stratum, stream.baseline, spec)


def observations_per_alarm(stream: Stream, spec: DetectionSpec, now: float, tests: int) -> float:
    """``A``: healthy observations per false alarm that keep this test within its share of the budget.

    The cell's budget is split evenly over its ``tests`` (metrics times kinds); the stream's
    observation rate over the look-back converts a yearly share into observations.
    """
    span = min(spec.history_s, max(now - float(stream.at[0]), 1.0)) if stream.at.size else spec.history_s
    per_year = stream.at.size / span * YEAR_S
    share = spec.false_alarms_per_cell_year / max(tests, 1)
    return max(per_year / share, 1.0)


def mde_within(n: int, q0: float, threshold: float) -> float | None:
    """Smallest rate increase whose expected evidence reaches ``threshold`` within ``n`` observations.

    Wald's approximation: the detector's mean delay is ``threshold / KL(q1 || q0)``; solved for
    ``q1`` by bisection. ``None`` when even a rate of 1 would not get there.
    """
    if n <= 0 or n * kl_bernoulli(1.0 - 1e-12, q0) < threshold:
        return None
    lo, hi = q0, 1.0 - 1e-12
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if n * kl_bernoulli(mid, q0) >= threshold else (mid, hi)
    return hi - q0


def resolve_delta(failed: npt.NDArray[np.bool_], q0: npt.NDArray[np.float64]) -> float:
    """The alternative an incident is resolved against: the low end of its estimated effect.

    The share of healthy observations that failed during the incident, ``(rate - q0) / (1 - q0)``,
    with ``rate`` the lower end of the rate's central 90 % Wilson interval (a 95 % lower bound):
    an incident is found where its failures happen to cluster, so its raw rate overstates the
    fault, and evidence against too large an effect would clear a fault that persists. At least
    the grid's smallest alternative.
    """
    if not failed.size:
        return DEFAULT_DELTAS[0]
    low = rate_ci(int(failed.sum()), int(failed.size), RESOLVE_CONFIDENCE)[0]
    base = float(q0.mean())
    return min(max((low - base) / max(1e-9, 1.0 - base), DEFAULT_DELTAS[0]), 0.99)


def observations_per_window(at: npt.NDArray[np.float64], window_s: float) -> float:
    """How many observations the stream makes in ``window_s``, from its span (at least one)."""
    span = float(at[-1] - at[0]) if at.size else 0.0
    return max(1.0, at.size * window_s / max(span, window_s))


@dataclass(frozen=True)
class Incident:
    """A chain of alarms: from its change point to its last alarm, and whether it has cleared.

    ``delta`` is the alternative it is resolved against; ``cleared`` the evidence for health
    after its last alarm (``ln`` of the reverse Shiryaev-Roberts statistic at the next incident,
    or the end); ``cleared_at`` the index at which that evidence first reached the bound
    (``None`` while open).
    """

    start: int
    last_alarm: int
    delta: float
    cleared: float
    cleared_at: int | None


def incidents(
    alarms: list[int],
    starts: list[int],
    failed: npt.NDArray[np.bool_],
    rates: npt.NDArray[np.float64],
    spec: DetectionSpec,
    batch: npt.NDArray[np.int64] | None = None,
    window_observations: float = 1.0,
) -> list[Incident]:
    """Chain a stream's alarms into incidents.

    Alarms belong to one incident until the fault has gone: a Shiryaev-Roberts detector of the
    change back to health (each observation's likelihood ratio of health against the incident's
    own effect, summed over every start after the alarm's pass) reaches
    ``resolve_likelihood_ratio`` times ``window_observations``; the next alarm then starts a new
    incident. Summing over start points means the fault's own observations between the last
    alarm and its removal do not have to be outweighed first: the clearance comes as soon after
    the removal as the evidence allows, whenever the last alarm was. While the fault persists,
    the statistic minus time is a martingale, so a false clearance comes at most once per
    ``resolve_likelihood_ratio`` windows of it on average (Pollak 1987). With ``batch``, the
    evidence is weighed only where a pass ends (the order inside a pass means nothing).
    """
    bound = math.log(spec.resolve_likelihood_ratio * window_observations)
    ends = np.ones(failed.size, bool) if batch is None else np.r_[batch[1:] != batch[:-1], True]
    out: list[Incident] = []
    first = 0
    for i, last in enumerate(alarms):
        since = starts[first]
        delta = resolve_delta(failed[since : last + 1], rates[since : last + 1])
        end = alarms[i + 1] if i + 1 < len(alarms) else failed.size
        after = last + 1 + int(np.argmax(ends[last:]))  # the first observation after the alarm's pass
        health = -log_likelihood_ratios(failed[after:end], rates[after:end], [delta])
        evidence = log_shiryaev_roberts(health)[0]
        reached = np.flatnonzero((evidence >= bound) & ends[after:end])
        cleared_at = after + int(reached[0]) if reached.size else None
        if cleared_at is not None or i + 1 == len(alarms):
            cleared = float(evidence[-1]) if evidence.size else 0.0
            out.append(Incident(since, last, delta, cleared, cleared_at))
            first = i + 1
    return out


@dataclass(frozen=True)
class Evaluation:
    """The detector's pass over a stream's usable observations (see :func:`evaluate`)."""

    failed: npt.NDArray[np.bool_]
    rates: npt.NDArray[np.float64]
    usable: npt.NDArray[np.bool_]
    observations_per_alarm: float
    run: DetectorRun
    incidents: list[Incident]


def evaluate(stream: Stream, spec: DetectionSpec, observations_per_false_alarm: float) -> Evaluation | None:
    """Null rates, the detector at ``ln A`` and its incidents; ``None`` without a usable observation.

    Observations of strata still building a baseline are dropped first.
    """
    q0, usable = null_rates(stream, spec)
    if not usable.any():
        return None
    failed, rates = stream.failed[usable], q0[usable]
    run = run_detector(failed, rates, threshold_for_budget(observations_per_false_alarm))
    batch = stream.batch[usable] if stream.batch is not None else None
    per_window = observations_per_window(stream.at[usable], spec.window_s)
    chain = incidents(run.alarms, run.starts, failed, rates, spec, batch, per_window) if run.alarmed else []
    return Evaluation(failed, rates, usable, observations_per_false_alarm, run, chain)


def self_candidate(
    stream: Stream, spec: DetectionSpec, now: float, tests: int, kind: Kind = "self"
) -> Candidate | None:
    """The stream's active incident, or ``None``.

    1. :func:`evaluate` with ``A`` from the cell's share of the budget.
    2. No alarm, or the evidence since the last alarm has cleared it: ``None``.
    3. Otherwise a candidate with the counts since the change point, the effect and its CI
       against the pooled baseline, and the MDE of this test over the look-back.
    """
    result = evaluate(stream, spec, observations_per_alarm(stream, spec, now, tests))
    if result is None or not result.incidents or result.incidents[-1].cleared_at is not None:
        return None
    failed, rates, usable, run = result.failed, result.rates, result.usable, result.run
    a, threshold = result.observations_per_alarm, run.threshold
    chain = result.incidents
    current = chain[-1]
    since, cleared, delta = current.start, current.cleared, current.delta
    observed = Counts(int(failed[since:].sum()), int(failed.size - since))
    base = sum(stream.baseline.values(), Counts())
    baseline = base if base.n else Counts(int(failed[:since].sum()), since)
    ci = rate_difference_ci(observed.failures, observed.n, baseline.failures, baseline.n)
    at = stream.at[usable]
    pooled_q0 = float(np.mean(rates[:since])) if since else float(np.mean(rates))
    details = {
        "alarms": len(run.alarms),
        "alternative_delta": run.delta,
        "observations_per_alarm": a,
        "cleared": cleared,
        "resolve_delta": delta,
        "change_at": float(at[min(since, at.size - 1)]),
        "last_alarm_at": float(at[run.alarms[-1]]),
        "runs": int(stream.runs[usable][since:].sum()),
        "run_failures": int(stream.failures[usable][since:].sum()),
    }
    return Candidate(
        stream.target_id,
        stream.cell,
        stream.metric,
        kind,
        statistic=run.peak,
        threshold=threshold,
        p_value=min(1.0, math.exp(-run.peak)),  # Ville: 1 / the e-value
        null_rate=pooled_q0,
        baseline=baseline,
        observed=observed,
        effect_ci=ci,
        mde=mde_within(int(failed.size), pooled_q0, threshold),
        details=details,
    )
