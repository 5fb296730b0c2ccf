"""One detection evaluation: read, decide, enrich, store. :func:`detect` is the entry point."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.config.sections import DetectionSpec
from canary.detection import equivalence_reads, queries
from canary.detection.decisions import (
    Candidate,
    Counts,
    Kind,
    invariant_candidate,
    is_invariant,
    no_data_candidate,
    outage_candidate,
    peer_candidate,
    tests_per_cell,
)
from canary.detection.episodes import Finding, store_episodes
from canary.detection.equivalence import CellRuns, SampledMemo, equivalence_candidates, sampled_to_read
from canary.detection.evidence import to_finding
from canary.detection.queries import AVAILABILITY
from canary.detection.screen import may_alarm
from canary.detection.sequential import Stream, observations_per_alarm, self_candidate
from canary.storage import observations

__all__ = ["Finding", "detect"]

# The sampled equivalence comparisons from one round to the next in this process: a cell is
# tested again only when it has new sampled runs (a new leader starts afresh: one look more).
_SAMPLED_MEMO: SampledMemo = {}


def _tests(streams: list[Stream], equivalence: Mapping[int, CellRuns]) -> dict[int, int]:
    """How many tests share each cell's budget: its quality metrics' and its equivalence tests."""
    metrics: dict[int, set[str]] = defaultdict(set)
    for s in streams:
        if s.metric != AVAILABILITY:
            metrics[s.target_id].add(s.metric)
    tests = {tid: tests_per_cell(len(m)) for tid, m in metrics.items()}
    for tid, runs in equivalence.items():
        tests[tid] = tests.get(tid, 1) + len(runs.metrics())
    return tests


def _self_candidates(
    streams: list[Stream], tests: Mapping[int, int], spec: DetectionSpec, now: datetime
) -> list[Candidate]:
    """Self and availability tests: all streams screened at once, the few that may alarm in full."""
    sequential = [s for s in streams if not is_invariant(s.metric, spec)]
    at = now.timestamp()
    budgets = [observations_per_alarm(s, spec, at, tests.get(s.target_id, 1)) for s in sequential]
    thresholds = [math.log(a) for a in budgets]
    out = []
    for s, maybe in zip(sequential, may_alarm(sequential, spec, thresholds), strict=True):
        if maybe:
            kind: Kind = "availability" if s.metric == AVAILABILITY else "self"
            found = self_candidate(s, spec, at, tests.get(s.target_id, 1), kind)
            if found is not None:
                out.append(found)
    return out


async def _invariants(
    conn: AsyncConnection, streams: list[Stream], spec: DetectionSpec, now: datetime
) -> list[Candidate]:
    metrics = sorted({s.metric for s in streams if is_invariant(s.metric, spec)})
    if not metrics:
        return []
    window_start = now - timedelta(seconds=spec.window_s)
    window = await queries.window_counts(conn, metrics, window_start, now)
    history = await queries.window_counts(
        conn, metrics, window_start - timedelta(seconds=spec.baseline_s), window_start
    )
    out = []
    for s in streams:
        if is_invariant(s.metric, spec):
            key = (s.target_id, s.metric)
            c = invariant_candidate(
                s.target_id, s.cell, s.metric, window.get(key, Counts()), history.get(key, Counts()), spec
            )
            if c is not None:
                out.append(c)
    return out


async def _peers(
    conn: AsyncConnection,
    names: Mapping[int, tuple[str, str]],
    tests: Mapping[int, int],
    spec: DetectionSpec,
    now: datetime,
) -> list[Candidate]:
    """Each cell against the same model's other cells, per quality metric (peers are one model's pools)."""
    counts = await queries.per_probe(conn, now - timedelta(seconds=spec.peer_window_s), now)
    by_model: dict[tuple[str, str], list[int]] = defaultdict(list)
    for tid, metric in counts:
        if tid in names and not is_invariant(metric, spec):
            by_model[(names[tid][1], metric)].append(tid)
    out = []
    for (_, metric), cells in sorted(by_model.items()):
        # The model's totals once, less each cell's own: summing every peer for every cell is
        # quadratic in the model's cells (a million additions at 1,000 cells).
        total: dict[int, Counts] = defaultdict(Counts)
        for p in cells:
            for probe, c in counts[(p, metric)].items():
                total[probe] = total[probe] + c
        model_cells = sorted(names[p][0] for p in cells)  # sorted once, not once per cell
        for tid in cells:
            cell = names[tid][0]
            own = counts[(tid, metric)]
            pooled = {
                probe: Counts(
                    c.failures - own.get(probe, Counts()).failures, c.n - own.get(probe, Counts()).n
                )
                for probe, c in total.items()
            }
            pooled = {probe: c for probe, c in pooled.items() if c.n > 0}
            found = peer_candidate(
                tid, cell, metric, counts[(tid, metric)], pooled,
                [c for c in model_cells if c != cell], spec, tests.get(tid, 1),
            )  # fmt: skip
            if found is not None:
                out.append(found)
    return out


async def _silent(
    conn: AsyncConnection,
    expected: Mapping[str, float],
    spec: DetectionSpec,
    now: datetime,
    unavailable: set[int],
) -> list[Candidate]:
    """Configured cells (name -> interval) that have gone quiet, or that answer nothing.

    A cell is due from when it was first seen. A cell already in ``unavailable`` (the sequential
    availability test flagged it) gets no second availability candidate.
    """
    out = []
    for cell, (tid, last, last_ok, first_seen) in sorted(
        (await queries.last_runs(conn, list(expected))).items()
    ):
        last_at = last.timestamp() if last is not None else None
        c = no_data_candidate(
            tid, cell, last_at, first_seen.timestamp(), expected[cell], now.timestamp(), spec
        )
        if c is None and last is not None and tid not in unavailable:
            ok_at = last_ok.timestamp() if last_ok is not None else None
            c = outage_candidate(
                tid, cell, AVAILABILITY, ok_at, first_seen.timestamp(), expected[cell], now.timestamp(), spec
            )
            if c is not None:
                since = last_ok if last_ok is not None else first_seen
                c = dataclasses.replace(c, observed=await queries.request_errors(conn, tid, since, now))
        if c is not None:
            out.append(c)
    return out


class _Phases:
    """Wall seconds per phase of one round, written into the caller's dict (when given)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into, self.last = into, time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        if self.into is not None:
            self.into[phase] = self.into.get(phase, 0.0) + now - self.last
        self.last = now


async def detect(
    engine: AsyncEngine,
    spec: DetectionSpec,
    now: datetime,
    *,
    rng: np.random.Generator | None = None,
    expected: Mapping[str, float] | None = None,
    phases: dict[str, float] | None = None,
) -> list[Finding]:
    """Evaluate every (cell, metric), store the round's findings as episodes, return the active ones.

    1. Bring the observation counts up to date (:mod:`canary.storage.observations`), then
       read each (cell, metric) stream of clustered observations, request errors included.
    2. Self and availability tests (:mod:`canary.detection.sequential`), invariants, peers,
       equivalence (:mod:`canary.detection.equivalence`) and, for the ``expected`` cells
       (name -> probe interval), silence and outages.
    3. Enrich each active candidate (:mod:`canary.detection.evidence`).
    4. Update, open and resolve episodes in one transaction (:mod:`canary.detection.episodes`).

    ``phases``, when given, receives the wall seconds of each step (what a benchmark prints).
    """
    rng = rng if rng is not None else np.random.default_rng()
    timer = _Phases(phases)
    await observations.refresh(engine)
    timer.done("refresh")
    async with engine.begin() as conn:
        names = await queries.targets(conn)
        streams = await queries.streams(conn, names, spec, now)
        timer.done("streams")
        since = now - timedelta(seconds=spec.peer_window_s)
        equivalence = await equivalence_reads.cell_runs(conn, since, now, sampled=True)
        to_read = sampled_to_read(equivalence, names, _SAMPLED_MEMO)
        await equivalence_reads.read_sampled(conn, equivalence, since, now, to_read)
        tests = _tests(streams, equivalence)
        timer.done("equivalence")
        # In a thread: the statistics are the round's CPU time, and the service's loop keeps probing.
        candidates = await asyncio.to_thread(_self_candidates, streams, tests, spec, now)
        timer.done("statistics")
        candidates += await _invariants(conn, streams, spec, now)
        timer.done("invariants")
        candidates += await _peers(conn, names, tests, spec, now)
        timer.done("peers")
        candidates += await asyncio.to_thread(
            equivalence_candidates, equivalence, names, spec, tests, _SAMPLED_MEMO
        )
        timer.done("equivalence")
        if expected:
            unavailable = {c.target_id for c in candidates if c.kind == "availability"}
            candidates += await _silent(conn, expected, spec, now, unavailable)
        timer.done("silence")
        findings = [await to_finding(conn, c, spec, now, rng) for c in candidates]
        stored = await store_episodes(conn, findings, now)
    timer.done("findings")
    return stored
