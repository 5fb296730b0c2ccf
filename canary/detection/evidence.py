"""What a finding shows besides its numbers: a failing output, sessions, deploys near the change.

These reads touch raw rows, but only for the few candidates a round turns into findings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Candidate, format_message, snippet
from canary.detection.episodes import Finding
from canary.detection.queries import AVAILABILITY
from canary.stats import session_clustering
from canary.storage.counts import failed, run_of_score, score_counts
from canary.storage.tables import DeployRow, RunRow, ScoreRow


async def sample(conn: AsyncConnection, c: Candidate, since: datetime, now: datetime) -> str | None:
    """A failing output of the cell: the scorer's own context snippet if it gave one, else the text.

    For availability, the newest request error's reason and message.
    """
    if c.metric == AVAILABILITY:
        q = (
            sa.select(RunRow.reason, RunRow.error)
            .where(RunRow.target_id == c.target_id, RunRow.status == "error")
            .where(RunRow.started_at > since, RunRow.started_at <= now)
            .order_by(RunRow.started_at.desc())
            .limit(1)
        )
        hit = (await conn.execute(q)).first()
        return None if hit is None else snippet(f"{hit.reason}: {hit.error or ''}")
    query = (
        sa.select(ScoreRow.detail, RunRow.output_text, RunRow.error)
        .join(RunRow, run_of_score())
        .where(ScoreRow.target_id == c.target_id, ScoreRow.metric == c.metric, failed())
        .where(ScoreRow.created_at > since, ScoreRow.created_at <= now)
        .order_by(ScoreRow.created_at.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    detail, text, error = row
    spans = detail.get("spans") if isinstance(detail, dict) else None
    if spans and isinstance(spans[0], dict) and spans[0].get("context"):
        return snippet(str(spans[0]["context"]))
    return snippet(text) or snippet(error)


async def sessions(
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


async def deploys(
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


def _window_s(c: Candidate, spec: DetectionSpec) -> float:
    windows = {"peer": spec.peer_window_s, "equivalence": spec.peer_window_s}
    return (windows | {"self": spec.history_s, "availability": spec.history_s}).get(c.kind, spec.window_s)


async def to_finding(
    conn: AsyncConnection, c: Candidate, spec: DetectionSpec, now: datetime, rng: np.random.Generator
) -> Finding:
    """The candidate with its evidence: change point, deploys around it, a sample, sessions, the message."""
    since = now - timedelta(seconds=_window_s(c, spec))
    change = c.details.get("change_at")
    change_at = datetime.fromtimestamp(change, UTC) if change is not None else None
    deploy_ids = await deploys(conn, c.cell, c.target_id, change_at or since, spec)
    # An equivalence finding has no failing output: its evidence is a statistic over many runs.
    example = None if c.kind in ("no_data", "equivalence") else await sample(conn, c, change_at or since, now)
    session_details: dict[str, Any] = {}
    session_line = None
    if c.kind in ("self", "invariant", "peer"):
        session_details, session_line = await sessions(conn, c, since, now, spec, rng)
    message = format_message(
        c, change_at=change_at, deploy_ids=deploy_ids, sample=example, sessions=session_line
    )
    return Finding(
        c.target_id, c.cell, c.metric, c.kind, c.baseline_rate, c.observed_rate, c.effect,
        c.effect_ci[0], c.effect_ci[1], c.baseline.n, c.baseline.failures, c.observed.n, c.observed.failures,
        c.statistic, c.threshold, c.p_value, c.mde, change_at, deploy_ids, example, message, now,
        {**c.details, **session_details, "null_rate": c.null_rate},
    )  # fmt: skip
