"""Deploys under a verdict: registration, the samples a verdict reads, and periodic evaluation.

A deploy names canary cells and baseline cells and a window (start, duration). While the window
is open every replica bursts probes on the cells it owns; the replica holding the leader lease
evaluates running deploys every ``verdict_interval_s`` with :func:`canary.verdicts.judgement.judge` and
stores the result in ``deploys.details``, ending the deploy when the window closes or at the
first FAIL (the tests are anytime-valid, so a FAIL at any look is as trustworthy as one at the
end). The verdict logic itself is pure; this module only reads and writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.config.globs import Selection
from canary.config.sections import VerdictPolicy
from canary.storage.observations import AVAILABILITY
from canary.storage.observed import observed, settled_before
from canary.storage.tables import DeployRow, TargetRow
from canary.verdicts.judgement import DeployState, MetricSamples, Verdict, advance, judge

if TYPE_CHECKING:
    from canary.stats.audit import Forced

REQUEST_ERRORS = "request_errors"  # failed requests (timeouts, 5xx...) as a rate metric
LATENCY = "latency_ms"
# Latency values read per side: the first ones of the window in the order the runs started, so the
# sample only grows (the test of stochastic order pairs them in that order and is valid for a growing
# sample, not a sliding or re-ordered one) and stops growing at the cap.
MAX_VALUES = 5000
# A run is stored when it ends, so one started just before a look may be missing from it and then
# appear among values already paired: latency reads only runs started this long before the look
# (the default request timeout).
LATENCY_SETTLE_S = 60.0


DEPLOYS: sa.Table = DeployRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Deploy:
    """One row of ``deploys`` as a plain value."""

    id: str
    name: str
    canary_cells: list[str]
    baseline_cells: list[str]
    started_at: datetime
    duration_s: float | None
    status: str
    details: dict[str, Any]
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Deploy:
        m = row._mapping
        return cls(**{f: m[f] for f in cls.__dataclass_fields__ if f in m})

    @property
    def ends_at(self) -> datetime:
        """End of the window; a deploy without a duration (an annotation) ends when it starts."""
        return self.started_at + timedelta(seconds=self.duration_s or 0.0)

    @property
    def judged(self) -> bool:
        """Whether this deploy asks for a verdict (other tools also record plain annotations)."""
        return bool(self.canary_cells and self.baseline_cells and self.duration_s)


class CellSelectionError(ValueError):
    """Cell patterns that match nothing, or canary and baseline sides that overlap."""

    def __init__(self, message: str, side: str) -> None:
        super().__init__(message)
        self.field = f"{side}_cells"  # the request field at fault


def expand_cells(patterns: Sequence[str], known: Sequence[str], side: str) -> list[str]:
    """Globs over cell names (:mod:`canary.config.globs`, ``!glob`` excludes) -> the known cells.

    A deploy gate must not quietly judge fewer cells than asked for, so every pattern,
    exclusions too, must match a known cell, and the selection must not end up empty.
    """
    selection = Selection.parse(patterns)
    unmatched = selection.unmatched(known)
    if unmatched:
        raise CellSelectionError(f"{side} pattern {unmatched[0]!r} matches no configured cell", side)
    cells = selection.select(known)
    if not cells:
        shown = ",".join(patterns)
        raise CellSelectionError(f"{side} patterns {shown!r} select no configured cell", side)
    return cells


async def create_deploy(
    engine: AsyncEngine,
    name: str,
    canary_cells: list[str],
    baseline_cells: list[str],
    started_at: datetime,
    duration_s: float,
    created_by: str = "api",
) -> Deploy:
    if set(canary_cells) & set(baseline_cells):
        raise CellSelectionError("a cell cannot be on both the canary and the baseline side", "baseline")
    values = {
        "id": uuid.uuid4().hex[:12],
        "name": name,
        "canary_cells": canary_cells,
        "baseline_cells": baseline_cells,
        "started_at": started_at,
        "duration_s": duration_s,
        "status": "running",
        "created_by": created_by,
        "details": {},
    }
    async with engine.begin() as conn:
        row = (await conn.execute(sa.insert(DEPLOYS).values(**values).returning(DEPLOYS))).one()
    return Deploy.from_row(row)


async def get_deploy(engine: AsyncEngine, deploy: str) -> Deploy | None:
    """A deploy by id, else the latest one with that name."""
    async with engine.connect() as conn:
        by_id = (await conn.execute(sa.select(DEPLOYS).where(DEPLOYS.c.id == deploy))).first()
        if by_id is not None:
            return Deploy.from_row(by_id)
        query = sa.select(DEPLOYS).where(DEPLOYS.c.name == deploy).order_by(DEPLOYS.c.created_at.desc())
        by_name = (await conn.execute(query.limit(1))).first()
        return Deploy.from_row(by_name) if by_name is not None else None


async def list_deploys(engine: AsyncEngine, limit: int = 50) -> list[Deploy]:
    async with engine.connect() as conn:
        query = sa.select(DEPLOYS).order_by(DEPLOYS.c.created_at.desc()).limit(limit)
        return [Deploy.from_row(r) for r in (await conn.execute(query)).all()]


async def running_deploys(engine: AsyncEngine, now: datetime) -> list[Deploy]:
    """Running deploys that ask for a verdict and whose window has started."""
    async with engine.connect() as conn:
        query = sa.select(DEPLOYS).where(DEPLOYS.c.status == "running", DEPLOYS.c.started_at <= now)
        deploys = [Deploy.from_row(r) for r in (await conn.execute(query)).all()]
    return [d for d in deploys if d.judged]


async def active_bursts(engine: AsyncEngine, now: datetime) -> dict[str, str]:
    """Cells to burst now (cell -> deploy id): both sides of running deploys inside their window."""
    bursts: dict[str, str] = {}
    for row in await running_deploys(engine, now):
        if now < row.ends_at:
            for cell in [*row.canary_cells, *row.baseline_cells]:
                bursts.setdefault(cell, row.id)
    return bursts


def _per_metric(observations: sa.Subquery) -> sa.Select[Any]:
    """Failing observations and observations per metric, from rows that are each one clustered
    observation (a cell's repeats of one probe version in one pass): repeats of a temperature-0
    probe fail together, so counting them as independent runs would overstate the evidence."""
    c = observations.c
    return sa.select(c.metric, sa.func.count().filter(c.failures > 0), sa.func.count()).group_by(c.metric)


async def collect_samples(
    conn: AsyncConnection,
    canary: Sequence[str],
    baseline: Sequence[str],
    start: datetime,
    end: datetime,
    values_before: datetime | None = None,
) -> list[MetricSamples]:
    """Per-metric failure counts on both sides inside the window, plus request errors and latency.

    A rate metric's ``n`` counts clustered observations, not runs (:func:`_per_metric`), read
    from ``observations`` up to date (:mod:`canary.storage.observed`); a pass counts whole, in the
    window holding its first score. Latency values are raw rows, the first of the window in the
    order the runs started, of runs started before ``values_before`` (default ``end``)."""
    sides: dict[str, dict[str, tuple[int, int]]] = {}
    latency: dict[str, tuple[float, ...]] = {}
    settled = await settled_before(conn)
    for side, cells in (("canary", canary), ("baseline", baseline)):
        window = {"cells": list(cells), "start": start, "end": min(end, values_before or end)}
        # metric -> (failing observations, observations) over the side's cells
        counts = {
            REQUEST_ERRORS if metric == AVAILABILITY else metric: (int(f), int(n))
            for metric, f, n in (
                await conn.execute(_per_metric(observed(settled, start, end, list(cells)).subquery()))
            ).all()
        }
        values = await conn.execute(
            sa.text(
                "SELECT r.latency_ms FROM runs r JOIN targets t ON t.id = r.target_id"
                " WHERE t.cell = ANY(:cells) AND r.started_at >= :start AND r.started_at < :end"
                " AND r.status = 'ok' ORDER BY r.started_at, r.id LIMIT :limit"
            ),
            {**window, "limit": MAX_VALUES},
        )
        latency[side] = tuple(float(v) for v in values.scalars())
        sides[side] = counts
    samples = [
        MetricSamples(metric, *sides["canary"].get(metric, (0, 0)), *sides["baseline"].get(metric, (0, 0)))
        for metric in sorted(sides["canary"].keys() | sides["baseline"].keys())
    ]
    samples.append(
        MetricSamples(LATENCY, canary_values=latency["canary"], baseline_values=latency["baseline"])
    )
    return samples


async def collect_forced(
    conn: AsyncConnection, canary: Sequence[str], baseline: Sequence[str], start: datetime, end: datetime
) -> tuple[list[Forced], dict[str, Forced]] | None:
    """Both sides' forced log-probabilities in the window (the equivalence probes' runs), or None."""
    from canary.detection import equivalence_reads  # scipy, loaded on the first verdict

    runs = await equivalence_reads.cell_runs(conn, start, end, [*canary, *baseline])
    if not runs:
        return None
    names = {tid: cell for tid, cell in (await conn.execute(sa.select(TargetRow.id, TargetRow.cell))).all()}
    by_cell = {names[tid]: r.forced for tid, r in runs.items() if r.forced}
    return [by_cell[c] for c in canary if c in by_cell], {c: by_cell[c] for c in baseline if c in by_cell}


async def evaluate_deploy(
    engine: AsyncEngine, row: Deploy, policy: VerdictPolicy, now: datetime
) -> DeployState:
    """1. Read both sides' samples from the window so far. 2. Judge them (in a worker thread: the
    power computations can take a second). 3. Advance the status: a FAIL ends the deploy, the end
    of the window decides the rest. 4. Store status and details, only if the deploy is still
    running (a concurrent end wins)."""
    end = min(now, row.ends_at)
    values_before = now - timedelta(seconds=LATENCY_SETTLE_S)
    async with engine.connect() as conn:
        samples = await collect_samples(
            conn, row.canary_cells, row.baseline_cells, row.started_at, end, values_before=values_before
        )
        forced = await collect_forced(conn, row.canary_cells, row.baseline_cells, row.started_at, end)
    verdict: Verdict = await anyio.to_thread.run_sync(judge, samples, policy, forced)
    state = advance(verdict, window_over=now >= row.ends_at)
    details = {
        **verdict.to_dict(),
        "evaluated_at": now.isoformat(),
        "status_reason": state.reason,
    }
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(DEPLOYS)
            .where(DEPLOYS.c.id == row.id, DEPLOYS.c.status == "running")
            .values(status=state.status, details=details)
        )
    return state


async def evaluate_running(engine: AsyncEngine, policy: VerdictPolicy, now: datetime) -> int:
    """Evaluate every running deploy that has started; returns how many were evaluated."""
    rows = await running_deploys(engine, now)
    for row in rows:
        await evaluate_deploy(engine, row, policy, now)
    return len(rows)


def deploy_json(row: Deploy) -> dict[str, Any]:
    """The API's view of a deploy: ``verdict`` is PENDING until the deploy ends."""
    details = dict(row.details or {})
    decided = row.status != "running"
    verdict = details.get("verdict") if decided else "PENDING"
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "verdict": verdict,
        "decided": decided,
        "exit_code": details.get("exit_code") if decided else None,
        "reason": details.get("status_reason", "not evaluated yet"),
        "canary_cells": list(row.canary_cells),
        "baseline_cells": list(row.baseline_cells),
        "started_at": row.started_at.isoformat(),
        "ends_at": row.ends_at.isoformat(),
        "duration_s": row.duration_s,
        "evaluated_at": details.get("evaluated_at"),
        "latest": details.get("verdict"),
        "metrics": details.get("metrics", []),
    }
