"""Stored runs and scores, one row each, for exports (``canary results``).

Each run in the window gives one ``availability`` row (passed when the request got an answer,
as detection counts request errors) followed by one row per score of the run. Runs cancelled
at shutdown are left out, as every count leaves them out (:func:`canary.storage.counts.run_counts`).
Rows stream from a server-side cursor in run order, so an export of millions of rows holds one
batch in memory at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.config.globs import Patterns, Selection
from canary.storage.counts import run_of_score
from canary.storage.tables import ProbeRow, RunRow, ScoreRow, TargetRow

AVAILABILITY = "availability"  # the metric name of request errors, as detection names it
OUTPUT_CHARS = 2000  # an export carries enough of an answer to read, not a runaway generation


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One stored outcome: a run's availability, or one of its scores."""

    run_id: int
    started_at: datetime
    cell: str
    probe: str
    probe_set: str
    version: int
    metric: str
    passed: bool
    value: float | None
    status: str
    reason: str | None
    error: str | None
    latency_ms: float
    served_pool: str | None
    deploy_id: str | None
    output: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the time as ISO 8601)."""
        return asdict(self) | {"started_at": self.started_at.isoformat()}


async def matching_names(
    conn: AsyncConnection, cells: Patterns, probes: Patterns
) -> tuple[list[str], list[str]]:
    """The stored cells and probe ids the globs select (a probe matches by id or set)."""
    cell_names = (await conn.execute(sa.select(TargetRow.cell).order_by(TargetRow.cell))).scalars().all()
    probe_rows = (await conn.execute(sa.select(ProbeRow.probe_id, ProbeRow.probe_set).distinct())).all()
    probe_selection = Selection.parse(probes)
    probe_ids = sorted({pid for pid, pset in probe_rows if probe_selection.matches(pid, pset)})
    return Selection.parse(cells).select(cell_names), probe_ids


async def result_rows(
    conn: AsyncConnection,
    *,
    since: datetime,
    until: datetime,
    cells: Patterns = None,
    probes: Patterns = None,
    metrics: Patterns = None,
) -> AsyncIterator[ResultRow]:
    """Every run in ``[since, until)`` of the selected cells and probes, as rows (see the module).

    ``cells``, ``probes`` and ``metrics`` are globs (:mod:`canary.config.globs`); ``metrics``
    selects ``availability`` rows too, by that name.
    """
    cell_names, probe_ids = await matching_names(conn, cells, probes)
    if not cell_names or not probe_ids:
        return
    wanted = Selection.parse(metrics)
    query = (
        sa.select(
            RunRow.id,
            RunRow.started_at,
            TargetRow.cell,
            ProbeRow.probe_id,
            ProbeRow.probe_set,
            ProbeRow.version,
            RunRow.status,
            RunRow.reason,
            RunRow.error,
            RunRow.latency_ms,
            RunRow.served_pool,
            RunRow.deploy_id,
            sa.func.left(RunRow.output_text, OUTPUT_CHARS).label("output"),
            ScoreRow.metric,
            ScoreRow.passed,
            ScoreRow.value,
            ScoreRow.detail,
        )
        .select_from(RunRow)
        .join(TargetRow, TargetRow.id == RunRow.target_id)
        .join(ProbeRow, ProbeRow.id == RunRow.probe_pk)
        .outerjoin(ScoreRow, run_of_score())
        .where(
            RunRow.started_at >= since,
            RunRow.started_at < until,
            RunRow.reason.is_distinct_from("cancelled"),
            TargetRow.cell.in_(cell_names),
            ProbeRow.probe_id.in_(probe_ids),
        )
        .order_by(RunRow.started_at, RunRow.id, ScoreRow.id)
    )
    stream = await conn.stream(query.execution_options(yield_per=2000))
    run: ResultRow | None = None
    async for r in stream:
        if run is None or r.id != run.run_id:
            run = ResultRow(
                run_id=r.id, started_at=r.started_at, cell=r.cell, probe=r.probe_id, probe_set=r.probe_set,
                version=r.version, metric=AVAILABILITY, passed=r.status == "ok", value=None, status=r.status,
                reason=r.reason, error=r.error, latency_ms=r.latency_ms, served_pool=r.served_pool,
                deploy_id=r.deploy_id, output=r.output,
            )  # fmt: skip
            if wanted.matches(AVAILABILITY):
                yield run
        if r.metric is not None and wanted.matches(r.metric):
            yield replace(run, metric=r.metric, passed=bool(r.passed), value=r.value, detail=r.detail or {})
