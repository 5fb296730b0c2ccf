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
  peers' own (:func:`canary.stats.agreement.greedy_comparison`);
- ``equivalence.sampled``: the cell's temperature > 0 samples against its peers' on the same
  prompts, a kernel two-sample test by betting (:func:`canary.stats.mmd_betting.betting_test`),
  not ``canary compare``'s permutation test: a permutation p-value goes no lower than
  ``1 / (1 + B)``, and this test runs at a level near ``1e-6`` every round. Betting is exact at
  any level (Ville's inequality) and costs a sort per prompt over at most 64 steps of the cell
  and 8 peers, so a round's cost is linear in the cells whatever the window holds; each
  prompt's texts are encoded once per round for all of its model's cells.

A ``different`` verdict is a candidate of kind ``equivalence``. The false-alarm budget: each
test is one of the cell's tests sharing ``false_alarms_per_cell_year``, and runs at that share
divided by the looks a year has: a union bound over every look, so a healthy cell's yearly false
alarms from it are at most its share, however the looks correlate. The forced and greedy tests
look every round (``interval_s`` apart). The sampled test looks only when the cell has new
sampled runs (a :data:`SampledMemo` keeps each cell's last comparison until then), so its looks
are the cell's sampled passes — ``passes * YEAR / peer_window_s`` a year from the passes in the
window, never more than the rounds — and a round's cost is that of the cells probed since the
last one.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from canary.config.sections import DetectionSpec
from canary.detection.decisions import YEAR_S, Candidate, Counts
from canary.stats.audit import compare_forced, compare_greedy
from canary.stats.equivalence import Comparison, Verdict
from canary.stats.mmd_betting import Encoded, betting_test, choose, encode_together

FORCED, GREEDY, SAMPLED = "equivalence.forced", "equivalence.greedy", "equivalence.sampled"
METRICS = (FORCED, GREEDY, SAMPLED)


@dataclass
class CellRuns:
    """One cell's equivalence evidence in the window: forced log-probabilities per (probe, version),
    temperature-0 and sampled texts per probe version (in time order)."""

    forced: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    greedy: dict[str, list[str]] = field(default_factory=dict)
    sampled: dict[str, list[str]] = field(default_factory=dict)  # read only where a test needs them
    sampled_counts: dict[str, int] = field(default_factory=dict)  # per probe version, always read
    sampled_latest: int = 0  # the id of the latest sampled run: the sampled evidence is new when it is
    sampled_pass: str = ""  # that run's pass (a random id: no other database's run has the same)
    sampled_passes: int = 0  # sampled passes in the window: how often the sampled test looks

    def __post_init__(self) -> None:
        if self.sampled and not self.sampled_counts:
            self.sampled_counts = {k: len(v) for k, v in self.sampled.items()}

    def sampled_key(self) -> tuple[int, str]:
        return self.sampled_latest, self.sampled_pass

    def metrics(self) -> list[str]:
        evidence = ((FORCED, self.forced), (GREEDY, self.greedy), (SAMPLED, self.sampled_counts))
        return [m for m, has in evidence if has]


def equivalence_level(spec: DetectionSpec, tests: int) -> float:
    """The per-round level of one equivalence test: its share of the yearly budget over a year's rounds."""
    rounds_per_year = YEAR_S / spec.interval_s
    return min(0.5, spec.false_alarms_per_cell_year / max(tests, 1) / rounds_per_year)


SampledMemo = dict[int, tuple[tuple[int, str], Comparison]]
"""Per target id, the latest sampled run (id, pass) its last sampled comparison saw, and that comparison."""


def sampled_level(spec: DetectionSpec, tests: int, passes: int) -> float:
    """The level of one look of the sampled test: its share of the yearly budget over a year's looks
    (one per sampled pass, ``passes`` of them in ``peer_window_s``; at most one per round)."""
    looks = min(YEAR_S / spec.interval_s, max(passes, 1) * YEAR_S / spec.peer_window_s)
    return min(0.5, spec.false_alarms_per_cell_year / max(tests, 1) / looks)


def mean_logprobs(passes: Sequence[Sequence[float]]) -> list[float]:
    """The per-token mean over a probe's passes, of the passes with the most common token count."""
    lengths = [len(p) for p in passes]
    common = max(set(lengths), key=lambda n: (lengths.count(n), n))
    chosen = [p for p in passes if len(p) == common]
    return [math.fsum(values) / len(chosen) for values in zip(*chosen, strict=True)]


def sampled_comparison(cell: Sequence[tuple[Encoded, Sequence[Encoded]]], level: float) -> Comparison:
    """The betting test of a cell's samples against its peers' (per prompt), read at ``level``."""
    r = betting_test(cell)
    if r.steps == 0:
        return Comparison("mmd_betting", math.nan, math.nan, math.nan, 1.0, math.nan, 0, "inconclusive")
    # No tolerance: the effect is how much more often the cell's sample sits nearer its own
    # samples than a peer's does, 0 for the same distribution.
    c = Comparison("mmd_betting", r.effect, math.nan, math.nan, r.p_value, 0.0, r.steps, "inconclusive")
    return judged(c, level)


def judged(c: Comparison, level: float) -> Comparison:
    """A sampled comparison read at ``level``: ``different`` when its p-value (1 / wealth) is at most it."""
    verdict: Verdict = "different" if c.n > 0 and c.p_value <= level else "inconclusive"
    return dataclasses.replace(c, verdict=verdict)


def _due(evidence: Mapping[int, CellRuns], cells: Sequence[int], memo: SampledMemo) -> set[int]:
    """The cells with sampled runs their last comparison has not seen."""
    seen = {t: memo[t][0] for t in cells if t in memo}
    return {t for t in cells if evidence[t].sampled_counts and seen.get(t) != evidence[t].sampled_key()}


def _by_model(evidence: Mapping[int, CellRuns], names: Mapping[int, tuple[str, str]]) -> list[list[int]]:
    by_model: dict[str, list[int]] = defaultdict(list)
    for tid in sorted(evidence):
        if tid in names:
            by_model[names[tid][1]].append(tid)
    return list(by_model.values())


def sampled_to_read(
    evidence: Mapping[int, CellRuns], names: Mapping[int, tuple[str, str]], memo: SampledMemo
) -> set[int]:
    """Whose sampled texts this round needs: each cell due a test and the peers it will be set
    against (chosen from the counts alone, as :func:`~canary.stats.mmd_betting.choose` does), so
    a round without new sampled runs reads no text at all."""
    out: set[int] = set()
    for cells in _by_model(evidence, names):
        for tid in _due(evidence, cells, memo):
            out.add(tid)
            peers = sorted((p for p in cells if p != tid), key=lambda p: names[p][0])
            for prompt, count in evidence[tid].sampled_counts.items():
                having = [p for p in peers if prompt in evidence[p].sampled_counts]
                _, chosen = choose(count, [evidence[p].sampled_counts[prompt] for p in having])
                out.update(having[j] for j in chosen)
    return out


def _encoded(evidence: Mapping[int, CellRuns], cells: Sequence[int]) -> dict[str, dict[int, Encoded]]:
    """Each sampled prompt's texts of one model's cells, encoded once (prompt -> target id -> ids)."""
    out: dict[str, dict[int, Encoded]] = {}
    for prompt in sorted({k for tid in cells for k in evidence[tid].sampled}):
        having = [tid for tid in cells if prompt in evidence[tid].sampled]
        arrays = encode_together([evidence[tid].sampled[prompt] for tid in having])
        out[prompt] = dict(zip(having, arrays, strict=True))
    return out


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
    memo: SampledMemo | None = None,
) -> list[Candidate]:
    """Every cell whose equivalence runs say ``different`` from its peers' (id -> (cell, model)).

    ``memo`` (updated in place) carries the sampled comparisons from round to round: a cell whose
    latest sampled run it has already seen keeps its comparison, re-read at this round's level.
    """
    memo = {} if memo is None else memo
    out: list[Candidate] = []
    for cells in _by_model(evidence, names):
        due = _due(evidence, cells, memo)
        encoded = _encoded(evidence, cells) if due else {}
        for tid in cells:
            peers = sorted((p for p in cells if p != tid), key=lambda p: names[p][0])
            mine, level = evidence[tid], equivalence_level(spec, tests.get(tid, 1))
            peer_names = sorted(names[p][0] for p in peers)
            results: list[tuple[str, Comparison, float]] = []
            if mine.forced:
                theirs = [evidence[p].forced for p in peers]
                results.append((FORCED, compare_forced(mine.forced, theirs, level), level))
            if mine.greedy:
                answers = [evidence[p].greedy for p in peers]
                results.append((GREEDY, compare_greedy(mine.greedy, answers, level), level))
            if mine.sampled_counts:
                at = sampled_level(spec, tests.get(tid, 1), mine.sampled_passes)
                if tid in due and mine.sampled:
                    samples = [
                        (encoded[k][tid], [encoded[k][p] for p in peers if p in encoded[k]])
                        for k in sorted(mine.sampled)
                    ]
                    memo[tid] = (mine.sampled_key(), sampled_comparison(samples, at))
                if tid not in memo:  # no texts were read for it (a caller that skipped them)
                    continue
                results.append((SAMPLED, judged(memo[tid][1], at), at))
            out.extend(
                _candidate(tid, names[tid][0], metric, c, peer_names, at)
                for metric, c, at in results
                if c.verdict == "different" and any(fnmatchcase(metric, g) for g in spec.metrics)
            )
    return out
