"""Detection decisions as pure functions: counts in, candidate findings, FDR selection, one-line messages.

:mod:`canary.detection.queries` reads the scores and calls these; nothing here touches the
database or a clock, so every decision is testable from arrays. Two hypotheses are tested per (cell, metric):

- ``self``: the recent window against the cell's own history (topped up with its peers' history
  when its own is short), with an always-valid p-value from a beta-mixture martingale, so looking
  at the window after every pass does not inflate the error rate within that window;
- ``peer``: the cell against the same model on the same probes on other platforms and pools over
  a longer window (Fisher's exact test on pooled peers), which catches a pool that drifted too
  slowly for its own history to notice.

All p-values of one evaluation go through Benjamini-Hochberg together; a rejection becomes a
finding only if its effect also reaches ``min_effect`` (filtering after BH only drops discoveries).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from canary.config.sections import DetectionSpec
from canary.stats import (
    always_valid_p_value,
    benjamini_hochberg,
    change_point,
    minimum_detectable_effect,
    peer_test,
    rate_ci,
    rate_difference_ci,
)

Kind = Literal["self", "peer", "invariant"]
MAX_NULL_RATE = 0.99  # the sequential test needs p0 < 1


@dataclass(frozen=True)
class Counts:
    failures: int = 0
    n: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.failures + other.failures, self.n + other.n)


@dataclass(frozen=True)
class Candidate:
    """One tested hypothesis of one evaluation, before the false-discovery control."""

    target_id: int
    cell: str
    metric: str
    kind: Kind
    p_value: float
    null_rate: float  # the rate tested against (conservative for ``self``)
    baseline: Counts
    observed: Counts
    effect_ci: tuple[float, float]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_rate(self) -> float:
        return self.baseline.failures / self.baseline.n if self.baseline.n else 0.0

    @property
    def observed_rate(self) -> float:
        return self.observed.failures / self.observed.n if self.observed.n else 0.0

    @property
    def effect(self) -> float:
        return self.observed_rate - self.baseline_rate

    @property
    def statistic(self) -> float:
        """Evidence in nats, ``ln(1/p)``: for ``self`` the log of the mixture likelihood ratio."""
        return -math.log(max(self.p_value, 1e-300))


@dataclass(frozen=True)
class Selected:
    """A candidate that BH rejected: the cutoff it beat and the effect it could have missed."""

    candidate: Candidate
    cutoff: float
    mde: float

    @property
    def threshold(self) -> float:
        return -math.log(self.cutoff)


def null_rate(baseline: Counts, spec: DetectionSpec) -> float:
    """The rate the window is tested against: the baseline's upper confidence bound, floored.

    The baseline is itself an estimate; testing against its upper bound keeps a short, lucky
    history from turning ordinary noise into an alarm.
    """
    upper = rate_ci(baseline.failures, baseline.n, spec.baseline_confidence)[1] if baseline.n else 0.0
    return min(MAX_NULL_RATE, max(spec.baseline_floor, upper))


def self_candidate(
    target_id: int,
    cell: str,
    metric: str,
    failures: npt.ArrayLike,
    n: npt.ArrayLike,
    spec: DetectionSpec,
    peer_baseline: Counts | None = None,
) -> Candidate | None:
    """Test the cell's recent window against its own history (bins oldest first, the last ones the window).

    1. Window = the last ``spec.window_bins`` bins; baseline = the bins before it.
    2. When the own baseline has fewer than ``min_baseline_runs`` runs, add the peers' history.
    3. Skip when the window has fewer than ``min_runs`` runs or the baseline is still too short.
    4. p-value: always-valid, for ``H0: rate <= null_rate(baseline)``.
    """
    f = np.asarray(failures, dtype=np.int64)
    nn = np.asarray(n, dtype=np.int64)
    w = spec.window_bins
    observed = Counts(int(f[-w:].sum()), int(nn[-w:].sum()))
    baseline = Counts(int(f[:-w].sum()), int(nn[:-w].sum())) if f.size > w else Counts()
    if is_invariant(metric, spec):
        return invariant_candidate(target_id, cell, metric, observed, baseline, spec)
    source = "own history"
    if baseline.n < spec.min_baseline_runs and peer_baseline is not None and peer_baseline.n:
        baseline, source = baseline + peer_baseline, "own + peer history"
    if observed.n < spec.min_runs or baseline.n < spec.min_baseline_runs:
        return None
    p0 = null_rate(baseline, spec)
    p = always_valid_p_value(observed.failures, observed.n, p0)
    ci = rate_difference_ci(observed.failures, observed.n, baseline.failures, baseline.n)
    return Candidate(target_id, cell, metric, "self", p, p0, baseline, observed, ci, {"baseline": source})


def is_invariant(metric: str, spec: DetectionSpec) -> bool:
    return any(fnmatchcase(metric, g) for g in spec.invariant_metrics)


def invariant_candidate(
    target_id: int, cell: str, metric: str, observed: Counts, baseline: Counts, spec: DetectionSpec
) -> Candidate | None:
    """A violated invariant: any failure in the window is conclusive (p = 0), however few runs.

    Served-by evidence sees a misroute the first time it happens; waiting for a rate to become
    significant would throw away exactly the advantage the DESIGN's ~125-probe figure rests on.
    """
    if observed.failures == 0:
        return None
    ci = (
        rate_difference_ci(observed.failures, observed.n, baseline.failures, baseline.n)
        if baseline.n
        else (rate_ci(observed.failures, observed.n))
    )
    return Candidate(
        target_id,
        cell,
        metric,
        "invariant",
        0.0,
        spec.baseline_floor,
        baseline,
        observed,
        ci,
        {"invariant": True},
    )


def peer_candidate(
    target_id: int,
    cell: str,
    metric: str,
    cell_by_probe: Mapping[int, Counts],
    peers_by_probe: Mapping[int, Counts],
    peer_cells: Sequence[str],
    spec: DetectionSpec,
) -> Candidate | None:
    """Test whether the cell fails more often than its pooled peers on the probes both ran.

    Restricting to common probes keeps a different probe mix from passing for a quality gap.
    """
    common = sorted(set(cell_by_probe) & set(peers_by_probe))
    observed = sum((cell_by_probe[k] for k in common), Counts())
    baseline = sum((peers_by_probe[k] for k in common), Counts())
    if not peer_cells or observed.n < spec.min_runs or baseline.n < spec.min_runs:
        return None
    cmp = peer_test(observed.failures, observed.n, baseline.failures, baseline.n)
    details = {"peers": list(peer_cells), "probes": len(common)}
    p0 = min(MAX_NULL_RATE, max(spec.baseline_floor, cmp.baseline_rate))
    return Candidate(
        target_id,
        cell,
        metric,
        "peer",
        cmp.p_value,
        p0,
        baseline,
        observed,
        (cmp.ci_low, cmp.ci_high),
        details,
    )


def select(candidates: Sequence[Candidate], spec: DetectionSpec) -> list[Selected]:
    """Benjamini-Hochberg over every candidate of the evaluation, then the practical-effect floor.

    The cutoff reported is ``k q / m`` (``k`` rejections of ``m``): the largest p-value BH let
    through. The MDE is the smallest increase over the null rate an exact test at that cutoff
    detects with 80 % power at the window's sample size.
    """
    if not candidates:
        return []
    mask = benjamini_hochberg([c.p_value for c in candidates], spec.false_discovery_rate)
    k, m = int(mask.sum()), len(candidates)
    cutoff = spec.false_discovery_rate * max(k, 1) / m
    out = []
    for c, rejected in zip(candidates, mask, strict=True):
        if rejected and (c.kind == "invariant" or c.effect >= spec.min_effect):
            mde = minimum_detectable_effect(min(c.null_rate, 0.5), c.observed.n, alpha=cutoff)
            out.append(Selected(c, cutoff, mde))
    return out


def change_bin(failures: npt.ArrayLike, n: npt.ArrayLike) -> int | None:
    """Index of the bin in which the failure rate most likely rose (``None`` with under two runs).

    Bins are expanded into a Bernoulli stream for :func:`canary.stats.change_point`; the order
    inside a bin is unknown, so the answer is only resolved to a bin.
    """
    f = np.asarray(failures, dtype=np.int64)
    nn = np.asarray(n, dtype=np.int64)
    if int(nn.sum()) < 2:
        return None
    stream = np.concatenate([np.arange(k) < x for x, k in zip(f, nn, strict=True) if k] or [np.zeros(0)])
    tau = change_point(stream.astype(bool), alternative="greater")
    return int(np.searchsorted(np.cumsum(nn), tau, side="right"))


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


def format_message(
    s: Selected,
    *,
    change_at: datetime | None,
    deploy_ids: Sequence[str],
    sample: str | None,
    sessions: str | None = None,
) -> str:
    """The one line an on-call engineer acts on: which cell and metric, how bad, how sure, since when."""
    c = s.candidate
    if c.kind == "invariant":
        parts = [
            f"{c.cell} {c.metric} [invariant]: {c.observed.failures} of {c.observed.n} runs violated it "
            f"({pct(c.observed_rate)}); a healthy cell never does "
            f"(history {c.baseline.failures}/{c.baseline.n})"
        ]
    else:
        against = "baseline" if c.kind == "self" else f"peers ({len(c.details.get('peers', []))})"
        observed = f"({c.observed.failures}/{c.observed.n})"
        baseline = f"{pct(c.baseline_rate)} ({c.baseline.failures}/{c.baseline.n})"
        mde = f"{pts(s.mde)} pts" if math.isfinite(s.mde) else "none"
        parts = [
            f"{c.cell} {c.metric} [{c.kind}]: {pct(c.observed_rate)} failing {observed} "
            f"vs {against} {baseline}",
            f"effect {pts(c.effect)} pts [95% CI {pts(c.effect_ci[0])}, {pts(c.effect_ci[1])}]",
            f"ln(1/p)={c.statistic:.1f} >= {s.threshold:.1f} (p={c.p_value:.2g}, BH cutoff {s.cutoff:.2g})",
            f"MDE at n={c.observed.n}: {mde}",
        ]
    if change_at is not None:
        parts.append(f"since {change_at:%Y-%m-%d %H:%MZ}")
    if deploy_ids:
        parts.append("deploys: " + ", ".join(deploy_ids))
    if sessions:
        parts.append(sessions)
    if sample:
        parts.append(f'e.g. "{sample}"')
    return "; ".join(parts)
