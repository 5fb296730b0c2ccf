"""Detection over stored scores: read counts, decide with :mod:`canary.detection.decisions`, write findings.

:func:`detect` is the entry point. All SQL that reads scores for detection lives here; the
decisions are the pure functions of :mod:`canary.detection.decisions`, so this module only gathers counts,
enriches the selected findings (change point, deploys, a failing output, sessions) and stores them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.config.sections import DetectionSpec
from canary.detection.decisions import (
    Candidate,
    Counts,
    Kind,
    Selected,
    change_bin,
    format_message,
    peer_candidate,
    select,
    self_candidate,
    snippet,
)
from canary.stats import session_clustering
from canary.storage.counts import AgeBuckets, score_counts
from canary.storage.tables import DeployRow, FindingRow, RunRow, ScoreRow, TargetRow

__all__ = ["Finding", "detect"]


@dataclass(frozen=True)
class Finding:
    """A stored finding: one (cell, metric) that is worse than its baseline or its peers."""

    target_id: int
    cell: str
    metric: str
    kind: Kind
    baseline_rate: float
    observed_rate: float
    effect: float
    effect_ci_low: float
    effect_ci_high: float
    n_baseline: int
    baseline_failures: int
    n_observed: int
    failures: int
    statistic: float
    threshold: float
    p_value: float
    mde: float | None
    change_point_at: datetime | None
    deploy_ids: list[str]
    sample_output: str | None
    message: str
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass
class _Stream:
    target_id: int
    metric: str
    failures: np.ndarray
    n: np.ndarray


async def _targets(conn: AsyncConnection) -> dict[int, tuple[str, str]]:
    rows = await conn.execute(sa.select(TargetRow.id, TargetRow.cell, TargetRow.model))
    return {tid: (cell, model) for tid, cell, model in rows.all()}


async def _bins(conn: AsyncConnection, now: datetime, bins: int, bucket_s: float) -> list[_Stream]:
    """Failure and run counts per (cell, metric) in ``bins`` bins of ``bucket_s`` ending at ``now``."""
    q = score_counts(
        since=now - timedelta(seconds=bins * bucket_s),
        until=now,
        closed="right",
        buckets=AgeBuckets(now, bucket_s),
    )
    streams: dict[tuple[int, str], _Stream] = {}
    for tid, metric, a, n, f in (await conn.execute(q)).all():
        s = streams.get((tid, metric))
        if s is None:
            s = streams[(tid, metric)] = _Stream(
                tid, metric, np.zeros(bins, np.int64), np.zeros(bins, np.int64)
            )
        i = bins - 1 - min(int(a), bins - 1)  # oldest first; age 0 is the newest bin
        s.n[i] += n
        s.failures[i] += f
    return list(streams.values())


async def _per_probe(
    conn: AsyncConnection, since: datetime, now: datetime
) -> dict[tuple[int, str], dict[int, Counts]]:
    q = score_counts(since=since, until=now, closed="right", by_probe=True)
    out: dict[tuple[int, str], dict[int, Counts]] = defaultdict(dict)
    for tid, metric, probe_pk, n, f in (await conn.execute(q)).all():
        out[(tid, metric)][probe_pk] = Counts(f, n)
    return out


def _candidates(
    streams: list[_Stream],
    per_probe: dict[tuple[int, str], dict[int, Counts]],
    targets: dict[int, tuple[str, str]],
    spec: DetectionSpec,
) -> list[Candidate]:
    """Every testable (cell, metric, kind) hypothesis; peers are the same model's other cells."""
    w = spec.window_bins
    by_model: dict[tuple[str, str], list[_Stream]] = defaultdict(list)
    for s in streams:
        by_model[(targets[s.target_id][1], s.metric)].append(s)
    out: list[Candidate] = []
    for s in streams:
        cell, model = targets[s.target_id]
        peers = [p for p in by_model[(model, s.metric)] if p.target_id != s.target_id]
        peer_base = Counts(
            sum(int(p.failures[:-w].sum()) for p in peers), sum(int(p.n[:-w].sum()) for p in peers)
        )
        own = self_candidate(s.target_id, cell, s.metric, s.failures, s.n, spec, peer_base)
        if own is not None:
            out.append(own)
        pooled: dict[int, Counts] = defaultdict(Counts)
        for p in peers:
            for probe, counts in per_probe.get((p.target_id, s.metric), {}).items():
                pooled[probe] = pooled[probe] + counts
        names = sorted(targets[p.target_id][0] for p in peers)
        vs_peers = peer_candidate(
            s.target_id, cell, s.metric, per_probe.get((s.target_id, s.metric), {}), pooled, names, spec
        )
        if vs_peers is not None:
            out.append(vs_peers)
    return out


async def _sample(conn: AsyncConnection, c: Candidate, since: datetime, now: datetime) -> str | None:
    """A failing output of the cell: the scorer's own context snippet if it gave one, else the text."""
    q = (
        sa.select(ScoreRow.detail, RunRow.output_text, RunRow.error)
        .join(RunRow, RunRow.id == ScoreRow.run_id)
        .where(ScoreRow.target_id == c.target_id, ScoreRow.metric == c.metric, sa.not_(ScoreRow.passed))
        .where(ScoreRow.created_at > since, ScoreRow.created_at <= now)
        .order_by(ScoreRow.created_at.desc())
        .limit(1)
    )
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    detail, text, error = row
    spans = detail.get("spans") if isinstance(detail, dict) else None
    if spans and isinstance(spans[0], dict) and spans[0].get("context"):
        return snippet(str(spans[0]["context"]))
    return snippet(text) or snippet(error)


async def _sessions(
    conn: AsyncConnection,
    c: Candidate,
    since: datetime,
    now: datetime,
    spec: DetectionSpec,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], str | None]:
    """Per-session breakdown and clustering test; sticky misrouting shows as clustered failures.

    Runs without a session key (the ``NULL`` group) are left out: they belong to no session.
    """
    q = score_counts(
        since=since, until=now, closed="right", target_ids=[c.target_id], metrics=[c.metric], by_session=True
    )
    rows = (await conn.execute(q)).all()
    by_session = {str(key): (int(f), int(n)) for _, _, key, n, f in rows if key is not None}
    if len(by_session) < 2:
        return {}, None
    result = session_clustering(by_session, rng, permutations=spec.session_permutations)
    hit = sum(1 for f, _ in by_session.values() if f)
    details = {
        "sessions": {k: {"failures": f, "n": n} for k, (f, n) in sorted(by_session.items())},
        "session_clustering": {"p_value": result.p_value, "icc": result.icc, "statistic": result.statistic},
    }
    verdict = "clustered" if result.p_value < 0.05 else "not clustered"
    return details, f"sessions: {verdict}, failures in {hit}/{len(by_session)} (p={result.p_value:.2g})"


async def _deploys(
    conn: AsyncConnection, cell: str, target_id: int, around: datetime, spec: DetectionSpec
) -> list[str]:
    """Deploys registered for the cell (by name or glob; none listed = all cells) near the change point."""
    look = timedelta(seconds=spec.deploy_lookaround_s)
    rows = await conn.execute(
        sa.select(DeployRow.id, DeployRow.canary_cells)
        .where(DeployRow.started_at.between(around - look, around + look))
        .order_by(DeployRow.started_at)
    )
    ids = [i for i, cells in rows.all() if not cells or any(fnmatchcase(cell, g) for g in cells)]
    tagged = await conn.execute(
        sa.select(RunRow.deploy_id)
        .where(RunRow.target_id == target_id, RunRow.deploy_id.is_not(None))
        .where(RunRow.started_at.between(around - look, around + look))
        .distinct()
    )
    return ids + sorted(d for d in tagged.scalars() if d is not None and d not in ids)


async def _enrich(
    conn: AsyncConnection,
    s: Selected,
    stream: _Stream,
    spec: DetectionSpec,
    now: datetime,
    rng: np.random.Generator,
) -> Finding:
    c = s.candidate
    window = spec.window_s if c.kind == "self" else spec.peer_window_s
    since = now - timedelta(seconds=window)
    bins = stream.n.size
    idx = change_bin(stream.failures, stream.n)
    change_at = (
        None if idx is None else (now - timedelta(seconds=(bins - idx) * spec.bucket_s)).astimezone(UTC)
    )
    deploy_ids = await _deploys(conn, c.cell, c.target_id, change_at or since, spec)
    sample = await _sample(conn, c, since, now)
    session_details, session_line = await _sessions(conn, c, since, now, spec, rng)
    message = format_message(
        s, change_at=change_at, deploy_ids=deploy_ids, sample=sample, sessions=session_line
    )
    return Finding(
        c.target_id, c.cell, c.metric, c.kind, c.baseline_rate, c.observed_rate, c.effect,
        c.effect_ci[0], c.effect_ci[1], c.baseline.n, c.baseline.failures, c.observed.n, c.observed.failures,
        c.statistic, s.threshold, c.p_value, s.mde if np.isfinite(s.mde) else None, change_at, deploy_ids,
        sample, message, now, {**c.details, **session_details, "null_rate": c.null_rate, "cutoff": s.cutoff},
    )  # fmt: skip


async def detect(
    engine: AsyncEngine, spec: DetectionSpec, now: datetime, *, rng: np.random.Generator | None = None
) -> list[Finding]:
    """Evaluate every (cell, metric) with enough data, control the FDR across all, store the findings.

    1. Read per-bin counts over the window and baseline, per-probe counts over the peer window.
    2. Build the self and peer candidates (:mod:`canary.detection.decisions`), run BH over all of them.
    3. For each rejection: change point, deploys around it, a failing output, session clustering,
       and the one-line message.
    4. Insert the findings in one transaction and return them with their ids.
    """
    rng = rng if rng is not None else np.random.default_rng()
    bins = spec.window_bins + spec.baseline_bins
    async with engine.begin() as conn:
        targets = await _targets(conn)
        streams = [
            s
            for s in await _bins(conn, now, bins, spec.bucket_s)
            if any(fnmatchcase(s.metric, g) for g in spec.metrics)
        ]
        per_probe = await _per_probe(conn, now - timedelta(seconds=spec.peer_window_s), now)
        selected = select(_candidates(streams, per_probe, targets, spec), spec)
        by_key = {(s.target_id, s.metric): s for s in streams}
        findings = [
            await _enrich(conn, s, by_key[(s.candidate.target_id, s.candidate.metric)], spec, now, rng)
            for s in selected
        ]
        if not findings:
            return []
        rows = [{k: v for k, v in dataclasses.asdict(f).items() if k != "id"} for f in findings]
        ids = (
            await conn.execute(
                sa.insert(FindingRow).returning(FindingRow.id, sort_by_parameter_order=True), rows
            )
        ).scalars()
        return [dataclasses.replace(f, id=i) for f, i in zip(findings, ids, strict=True)]
