"""Detection decisions as pure functions: counts in, candidate findings and one-line messages out.

:mod:`canary.detection.queries` reads the stored runs and scores and calls these; nothing here
touches the database or a clock, so every decision is testable from arrays. The kinds:

- ``self`` (and ``availability``, the same test on request errors): the cell against its own
  history, sequentially (:mod:`canary.detection.sequential`);
- ``peer``: the cell against the same model on the same probes on other platforms and pools over
  ``peer_window_s``, a Cochran-Mantel-Haenszel test stratified by probe version at the per-look
  level its share of the false-alarm budget allows;
- ``invariant``: a metric a healthy cell never fails (a run served by the wrong pool): one
  failure in ``window_s`` is a finding;
- ``no_data``: a configured cell with no run for ``no_data_intervals`` of its intervals (and
  ``availability`` when it runs but answers nothing that long, an outage);
- ``equivalence``: the cell's equivalence runs against its peers' (:mod:`canary.detection.equivalence`).

Every test of a cell draws on one budget, ``false_alarms_per_cell_year``, split evenly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from canary.config.sections import DetectionSpec
from canary.stats import rate_ci, rate_difference_ci
from canary.stats.rates import cmh_test, minimum_detectable_effect

Kind = Literal["self", "peer", "invariant", "availability", "no_data", "equivalence"]
YEAR_S = 365.25 * 86400.0
# Overlapping peer windows are looked at every round: a false gap seen by one look is seen by
# the next few too. Counting a window as this many independent looks keeps the yearly budget
# (checked by simulation in tests/detection/test_budget.py).
PEER_LOOKS_PER_WINDOW = 4.0


@dataclass(frozen=True)
class Counts:
    failures: int = 0
    n: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.failures + other.failures, self.n + other.n)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.failures - other.failures, self.n - other.n)


@dataclass(frozen=True)
class Candidate:
    """One (cell, metric, kind) that has an active incident this round, with the numbers behind it.

    ``statistic`` and ``threshold`` are in nats (the detector's log evidence, or ``ln(1/p)`` for
    the peer test); ``mde`` is the smallest rate increase the test that ran would find.
    """

    target_id: int
    cell: str
    metric: str
    kind: Kind
    statistic: float
    threshold: float
    p_value: float
    null_rate: float
    baseline: Counts
    observed: Counts
    effect_ci: tuple[float, float]
    mde: float | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_rate(self) -> float:
        return self.baseline.failures / self.baseline.n if self.baseline.n else 0.0

    @property
    def observed_rate(self) -> float:
        return self.observed.failures / self.observed.n if self.observed.n else 0.0

    @property
    def effect(self) -> float:
        if "effect" in self.details:  # an equivalence statistic's own effect (nats per token)
            return float(self.details["effect"])
        return self.observed_rate - self.baseline_rate


def tests_per_cell(metrics: int) -> int:
    """How many tests share a cell's budget: self and peer per metric, plus availability."""
    return 2 * metrics + 1


def is_invariant(metric: str, spec: DetectionSpec) -> bool:
    return any(fnmatchcase(metric, g) for g in spec.invariant_metrics)


def invariant_candidate(
    target_id: int, cell: str, metric: str, observed: Counts, baseline: Counts, spec: DetectionSpec
) -> Candidate | None:
    """A violated invariant: any failure in the window is conclusive, however few runs.

    Served-by evidence sees a misroute the first time it happens; waiting for a rate to become
    significant would throw away exactly the advantage the DESIGN's ~125-probe figure rests on.
    """
    if observed.failures == 0:
        return None
    ci = (
        rate_difference_ci(observed.failures, observed.n, baseline.failures, baseline.n)
        if baseline.n
        else rate_ci(observed.failures, observed.n)
    )
    return Candidate(
        target_id, cell, metric, "invariant", 0.0, 0.0, 0.0, spec.baseline_floor,
        baseline, observed, ci, None, {"invariant": True},
    )  # fmt: skip


def peer_level(spec: DetectionSpec, tests: int) -> float:
    """The per-look level of the peer test: its yearly share of the budget over its looks per year."""
    looks_per_year = YEAR_S / spec.peer_window_s * PEER_LOOKS_PER_WINDOW
    return min(0.5, spec.false_alarms_per_cell_year / max(tests, 1) / looks_per_year)


def peer_candidate(
    target_id: int,
    cell: str,
    metric: str,
    cell_by_probe: Mapping[int, Counts],
    peers_by_probe: Mapping[int, Counts],
    peer_cells: Sequence[str],
    spec: DetectionSpec,
    tests: int,
) -> Candidate | None:
    """Whether the cell fails more often than its peers on the probe versions both ran.

    Stratified by probe version (Cochran-Mantel-Haenszel), so a different probe mix, or a probe
    one side fails always, never passes for a quality gap.
    """
    common = sorted(set(cell_by_probe) & set(peers_by_probe))
    observed = sum((cell_by_probe[k] for k in common), Counts())
    baseline = sum((peers_by_probe[k] for k in common), Counts())
    if not peer_cells or observed.n < spec.min_runs or baseline.n < spec.min_runs:
        return None
    effect = observed.failures / observed.n - baseline.failures / baseline.n
    if effect < spec.min_effect:  # no finding whatever the test says: most cells stop here, untested
        return None
    level = peer_level(spec, tests)
    result = cmh_test(
        [cell_by_probe[k].failures for k in common], [cell_by_probe[k].n for k in common],
        [peers_by_probe[k].failures for k in common], [peers_by_probe[k].n for k in common],
    )  # fmt: skip
    if result.p_value > level:
        return None
    ci = rate_difference_ci(observed.failures, observed.n, baseline.failures, baseline.n)
    null = min(0.99, max(spec.baseline_floor, baseline.failures / baseline.n))
    mde = minimum_detectable_effect(min(null, 0.5), observed.n, alpha=level)
    return Candidate(
        target_id, cell, metric, "peer", -math.log(max(result.p_value, 1e-300)), -math.log(level),
        result.p_value, null, baseline, observed, ci, mde if math.isfinite(mde) else None,
        {"peers": list(peer_cells), "probes": len(common), "level": level},
    )  # fmt: skip


def no_data_candidate(
    target_id: int,
    cell: str,
    last_run_at: float | None,
    first_seen: float,
    interval_s: float,
    now: float,
    spec: DetectionSpec,
) -> Candidate | None:
    """A configured cell with no run for ``no_data_intervals`` of its intervals (a never-probed cell
    counts from when it was first seen)."""
    silent_s = now - (last_run_at if last_run_at is not None else first_seen)
    if silent_s < spec.no_data_intervals * interval_s:
        return None
    details = {"last_run_at": last_run_at, "interval_s": interval_s, "silent_s": silent_s}
    return Candidate(
        target_id, cell, "no_data", "no_data", 0.0, 0.0, 0.0, 0.0, Counts(), Counts(),
        (0.0, 0.0), None, details,
    )  # fmt: skip


def outage_candidate(
    target_id: int,
    cell: str,
    metric: str,
    last_ok_at: float | None,
    first_seen: float,
    interval_s: float,
    now: float,
    spec: DetectionSpec,
) -> Candidate | None:
    """A probed cell that has answered no request for ``no_data_intervals`` of its intervals.

    Its request errors feed the sequential ``availability`` test too, but that test learns each
    probe's error rate from the cell's own history: to it, a cell failing since it was first
    probed, or for longer than its baseline, looks normal. A cell that answers nothing is a
    finding whatever its history. The caller fills in ``observed`` (the errors since).
    """
    failing_s = now - (last_ok_at if last_ok_at is not None else first_seen)
    if failing_s < spec.no_data_intervals * interval_s:
        return None
    since = last_ok_at if last_ok_at is not None else first_seen
    details = {"outage": True, "last_ok_at": last_ok_at, "interval_s": interval_s, "failing_s": failing_s}
    return Candidate(
        target_id, cell, metric, "availability", 0.0, 0.0, 0.0, 0.0, Counts(), Counts(),
        (0.0, 0.0), None, details | {"change_at": since},
    )  # fmt: skip


def pct(rate: float) -> str:
    """A rate as a percentage with enough digits for rare events (0.04 %, 1.2 %, 35 %)."""
    value = 100.0 * rate
    if value == 0 or abs(value) >= 10:
        return f"{value:.0f}%"
    if abs(value) >= 1:
        return f"{value:.1f}%"
    return f"{value:.2g}%"


def pts(delta: float) -> str:
    """A rate difference in percentage points, signed: +11.6, -0.42, +0.004."""
    value = 100.0 * delta
    return f"{value:+.1f}" if abs(value) >= 1 or value == 0 else f"{value:+.2g}"


def snippet(text: str | None, limit: int = 120) -> str | None:
    """One line of at most ``limit`` characters: whitespace collapsed, quotes kept readable."""
    if not text:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _equivalence_headline(c: Candidate) -> list[str]:
    """Statistic, effect with its interval (at the test's level), tolerance, tokens, evidence."""
    d = c.details
    if c.metric == "equivalence.sampled":
        return [
            f"{c.cell} {c.metric} [equivalence]: {d.get('statistic')} {c.effect:+.3g} (how much more "
            f"often its sample sits nearer its own samples than a peer's does; 0 for one model), "
            f"{d.get('n', 0)} sample steps against peers ({len(d.get('peers', []))})",
            f"evidence (log-wealth) {c.statistic:.1f} >= {c.threshold:.1f} nats (p<={c.p_value:.2g})",
        ]
    forced = c.metric == "equivalence.forced"
    unit, count = ("nats/token", "tokens") if forced else ("more divergent", "answers")
    low, high = c.effect_ci
    return [
        f"{c.cell} {c.metric} [equivalence]: {d.get('statistic')} {c.effect:.4g} {unit} "
        f"[CI {low:.4g}, {high:.4g}] vs tolerance {d.get('tolerance', math.nan):.4g}, "
        f"{d.get('n', 0)} {count} against peers ({len(d.get('peers', []))})",
        f"evidence {c.statistic:.1f} >= {c.threshold:.1f} nats (p<={c.p_value:.2g})",
    ]


def _headline(c: Candidate) -> list[str]:
    if c.kind == "equivalence":
        return _equivalence_headline(c)
    if c.kind == "invariant":
        return [
            f"{c.cell} {c.metric} [invariant]: {c.observed.failures} of {c.observed.n} runs violated it "
            f"({pct(c.observed_rate)}); a healthy cell never does "
            f"(history {c.baseline.failures}/{c.baseline.n})"
        ]
    if c.kind == "no_data":
        silent = c.details.get("silent_s", 0.0) / 60
        since = (
            f"never probed in {silent:.0f} min"
            if c.details.get("last_run_at") is None
            else f"no run for {silent:.0f} min"
        )
        return [f"{c.cell} [no_data]: {since} (interval {c.details.get('interval_s', 0):.0f} s)"]
    if c.kind == "availability" and c.details.get("outage"):
        failing, interval = c.details.get("failing_s", 0.0) / 60, c.details.get("interval_s", 0.0)
        return [
            f"{c.cell} {c.metric} [availability]: no request answered for {failing:.0f} min "
            f"({c.observed.failures}/{c.observed.n} runs failed; interval {interval:.0f} s)"
        ]
    against = f"peers ({len(c.details.get('peers', []))})" if c.kind == "peer" else "baseline"
    what = "failing" if c.kind != "availability" else "of requests failing"
    unit = "runs" if c.kind == "peer" else "passes x probes"
    mde = f"{pts(c.mde)} pts" if c.mde is not None else "none"
    return [
        f"{c.cell} {c.metric} [{c.kind}]: {pct(c.observed_rate)} {what} "
        f"({c.observed.failures}/{c.observed.n} {unit}) "
        f"vs {against} {pct(c.baseline_rate)} ({c.baseline.failures}/{c.baseline.n})",
        f"effect {pts(c.effect)} pts [95% CI {pts(c.effect_ci[0])}, {pts(c.effect_ci[1])}]",
        f"evidence {c.statistic:.1f} >= {c.threshold:.1f} nats (p<={c.p_value:.2g})",
        f"MDE: {mde}",
    ]


def format_message(
    c: Candidate,
    *,
    change_at: datetime | None,
    deploy_ids: Sequence[str],
    sample: str | None,
    sessions: str | None = None,
) -> str:
    """The one line an on-call engineer acts on: which cell and metric, how bad, how sure, since when."""
    parts = _headline(c)
    if change_at is not None:
        parts.append(f"since {change_at:%Y-%m-%d %H:%MZ}")
    if deploy_ids:
        parts.append("deploys: " + ", ".join(deploy_ids))
    if sessions:
        parts.append(sessions)
    if sample:
        parts.append(f'e.g. "{sample}"')
    return "; ".join(parts)
