"""Equivalence findings as pure functions: each cell's equivalence runs against its peers'.

The scheduled equivalence probes (:mod:`canary.probing.equivalence_runs`) store, per cell, the
teacher-forced log-probabilities of fixed continuations and temperature-0 answers. Each round,
per cell, against the same model's other cells over ``peer_window_s``, with the functions
``canary compare`` uses (:mod:`canary.stats.audit`, one code path):

- ``equivalence.forced``: the paired test of the cell's per-token log-probabilities against
  the peers' median on the same probes and the same tokens
  (:func:`canary.stats.equivalence.forced_comparison`); a probe that the cell cuts into a
  different number of tokens than every peer is a different tokenizer, a different model;
- ``equivalence.greedy``: the cell's divergence from the peers' consensus answer against the
  peers' own (:func:`canary.stats.agreement.greedy_comparison`).

A ``different`` verdict is a candidate of kind ``equivalence``. The false-alarm budget: each
test is one of the cell's tests sharing ``false_alarms_per_cell_year``, and runs at that share
divided by the rounds a year has (``interval_s`` apart): a union bound over every look, so a
healthy cell's yearly false alarms from it are at most its share, however the looks correlate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from canary.config.sections import DetectionSpec
from canary.detection.decisions import YEAR_S, Candidate, Counts
from canary.stats.audit import compare_forced, compare_greedy
from canary.stats.equivalence import Comparison

FORCED, GREEDY = "equivalence.forced", "equivalence.greedy"
METRICS = (FORCED, GREEDY)


@dataclass
class CellRuns:
    """One cell's equivalence evidence in the window: forced log-probabilities per (probe, version),
    temperature-0 texts per probe version."""

    forced: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    greedy: dict[str, list[str]] = field(default_factory=dict)

    def metrics(self) -> list[str]:
        return [m for m, has in ((FORCED, self.forced), (GREEDY, self.greedy)) if has]


def equivalence_level(spec: DetectionSpec, tests: int) -> float:
    """The per-round level of one equivalence test: its share of the yearly budget over a year's rounds."""
    rounds_per_year = YEAR_S / spec.interval_s
    return min(0.5, spec.false_alarms_per_cell_year / max(tests, 1) / rounds_per_year)


def mean_logprobs(passes: Sequence[Sequence[float]]) -> list[float]:
    """The per-token mean over a probe's passes, of the passes with the most common token count."""
    lengths = [len(p) for p in passes]
    common = max(set(lengths), key=lambda n: (lengths.count(n), n))
    chosen = [p for p in passes if len(p) == common]
    return [math.fsum(values) / len(chosen) for values in zip(*chosen, strict=True)]


def _candidate(
    target_id: int, cell: str, metric: str, c: Comparison, peers: list[str], level: float
) -> Candidate:
    p_value = max(c.p_value, 1e-300)
    details = {
        "test": metric, "statistic": c.statistic, "effect": c.effect, "tolerance": c.tolerance,
        "n": c.n, "peers": peers, "level": level,
    }  # fmt: skip
    return Candidate(
        target_id, cell, metric, "equivalence", -math.log(p_value), -math.log(level), c.p_value,
        c.tolerance, Counts(), Counts(0, c.n), (c.ci_low, c.ci_high), None, details,
    )  # fmt: skip


def equivalence_candidates(
    evidence: Mapping[int, CellRuns],
    names: Mapping[int, tuple[str, str]],
    spec: DetectionSpec,
    tests: Mapping[int, int],
) -> list[Candidate]:
    """Every cell whose equivalence runs say ``different`` from its peers' (id -> (cell, model))."""
    by_model: dict[str, list[int]] = defaultdict(list)
    for tid in sorted(evidence):
        if tid in names:
            by_model[names[tid][1]].append(tid)
    out: list[Candidate] = []
    for cells in by_model.values():
        for tid in cells:
            peers = [p for p in cells if p != tid]
            mine, level = evidence[tid], equivalence_level(spec, tests.get(tid, 1))
            peer_names = sorted(names[p][0] for p in peers)
            results: list[tuple[str, Comparison]] = []
            if mine.forced:
                theirs = [evidence[p].forced for p in peers]
                results.append((FORCED, compare_forced(mine.forced, theirs, level)))
            if mine.greedy:
                answers = [evidence[p].greedy for p in peers]
                results.append((GREEDY, compare_greedy(mine.greedy, answers, level)))
            out.extend(
                _candidate(tid, names[tid][0], metric, c, peer_names, level)
                for metric, c in results
                if c.verdict == "different" and any(fnmatchcase(metric, g) for g in spec.metrics)
            )
    return out
