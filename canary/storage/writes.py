"""Writes and reads of the probe pipeline: cells, probe versions, runs, scores, references.

Everything here is a plain async function over an ``AsyncSession`` or ``AsyncEngine``; the
runner batches results and calls :func:`write_results` once per batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.config.loader import Target
from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring.base import Score
from canary.storage import logprobs
from canary.storage.tables import ProbeRow, ReferenceOutputRow, RunRow, ScoreRow, TargetRow

MAX_OUTPUT_CHARS = 20_000  # a runaway generation must not bloat the table


@dataclass(slots=True)
class RunResult:
    """One finished request, scored, ready to store."""

    pass_id: uuid.UUID
    target_id: int
    probe_pk: int
    started_at: datetime
    completion: Completion
    scores: list[Score] = field(default_factory=list)
    repeat_index: int = 0
    session_key: str | None = None
    deploy_id: str | None = None
    served_pool: str | None = None
    establishes_reference: bool = False


async def sync_targets(conn: AsyncConnection, targets: Sequence[Target]) -> dict[str, int]:
    """Upsert the cells (never their credentials); returns cell name -> id."""
    if not targets:
        return {}
    rows = [
        {
            "cell": t.cell,
            "model": t.spec.model,
            "platform": t.spec.platform,
            "pool": t.spec.pool,
            "provider": t.spec.provider,
            "base_url": t.spec.base_url,
            "model_id": t.spec.model_id,
            "expected_pool": t.spec.expected_pool,
        }
        for t in targets
    ]
    insert = pg_insert(TargetRow).values(rows)
    updated = ("provider", "base_url", "model_id", "expected_pool", "model", "platform")
    upsert = insert.on_conflict_do_update(
        index_elements=[TargetRow.cell],
        set_={c: insert.excluded[c] for c in updated} | {"last_seen": sa.func.now()},
    ).returning(TargetRow.cell, TargetRow.id)
    result = await conn.execute(upsert)
    return {cell: id_ for cell, id_ in result.all()}


async def sync_probes(conn: AsyncConnection, probes: Sequence[Probe]) -> dict[tuple[str, str], int]:
    """Record each probe version once; returns (probe id, content hash) -> row id.

    A probe whose content changed gets the next version number; old versions stay, so runs
    recorded against them keep their meaning.
    """
    if not probes:
        return {}
    # Serialise concurrent passes deciding version numbers (two replicas starting together).
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('canary.sync_probes'))"))
    ids = [p.id for p in probes]
    existing = await conn.execute(
        sa.select(ProbeRow.probe_id, ProbeRow.content_hash, ProbeRow.id, ProbeRow.version).where(
            ProbeRow.probe_id.in_(ids)
        )
    )
    known: dict[tuple[str, str], int] = {}
    latest_version: dict[str, int] = {}
    for probe_id, content_hash, row_id, version in existing.all():
        known[(probe_id, content_hash)] = row_id
        latest_version[probe_id] = max(version, latest_version.get(probe_id, 0))
    new_rows = []
    for p in probes:
        if (p.id, p.version) not in known:
            latest_version[p.id] = latest_version.get(p.id, 0) + 1
            new_rows.append(
                {
                    "probe_id": p.id,
                    "probe_set": p.probe_set,
                    "version": latest_version[p.id],
                    "content_hash": p.version,
                    "spec": p.spec.model_dump(mode="json"),
                }
            )
    if new_rows:
        inserted = await conn.execute(
            sa.insert(ProbeRow).returning(ProbeRow.probe_id, ProbeRow.content_hash, ProbeRow.id), new_rows
        )
        for probe_id, content_hash, row_id in inserted.all():
            known[(probe_id, content_hash)] = row_id
    return known


async def load_references(conn: AsyncConnection, target_ids: Iterable[int]) -> dict[tuple[int, int], str]:
    """Each cell's stored reference outputs: (target id, probe row id) -> text."""
    rows = await conn.execute(
        sa.select(
            ReferenceOutputRow.target_id, ReferenceOutputRow.probe_pk, ReferenceOutputRow.output_text
        ).where(ReferenceOutputRow.target_id.in_(list(target_ids)))
    )
    return {(t, p): text for t, p, text in rows.all()}


def storable(value: Any) -> Any:
    """``value`` with every NUL character replaced by U+FFFD, in strings, lists and dicts.

    PostgreSQL's text and jsonb cannot hold NUL, and an upstream may send one (JSON allows
    ``\u0000``): stored as it came, one such answer made its whole batch fail to insert.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def run_values(r: RunResult) -> dict[str, Any]:
    c = r.completion
    return {
        "pass_id": r.pass_id,
        "target_id": r.target_id,
        "probe_pk": r.probe_pk,
        "repeat_index": r.repeat_index,
        "started_at": r.started_at,
        "status": "ok" if c.ok else "error",
        "reason": c.reason.value if c.reason else None,
        "error": c.error,
        "http_status": c.http_status,
        "latency_ms": c.latency_s * 1000.0,
        "served_by": c.served_by,
        "served_pool": r.served_pool,
        "output_text": c.text[:MAX_OUTPUT_CHARS] if c.ok else None,
        "token_logprobs": logprobs.encode(
            [[t.token, t.logprob, [list(a) for a in t.top]] for t in c.tokens]
            if c.tokens is not None
            else None
        ),
        "finish_reason": c.finish_reason,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "retry_after_s": c.retry_after_s,
        "deploy_id": r.deploy_id,
        "session_key": r.session_key,
    }


async def write_results(conn: AsyncConnection, results: Sequence[RunResult]) -> list[int]:
    """Insert a batch of runs with their scores (and new references); returns the run ids."""
    if not results:
        return []
    inserted = await conn.execute(
        sa.insert(RunRow).returning(RunRow.id, sort_by_parameter_order=True),
        [storable(run_values(r)) for r in results],
    )
    run_ids = list(inserted.scalars())
    score_rows = [
        {
            "run_id": run_id,
            "target_id": r.target_id,
            "probe_pk": r.probe_pk,
            "metric": s.metric,
            "passed": s.passed,
            "value": s.value,
            "detail": storable(s.detail),
            "created_at": r.started_at,
        }
        for run_id, r in zip(run_ids, results, strict=True)
        for s in r.scores
    ]
    if score_rows:
        await conn.execute(sa.insert(ScoreRow), score_rows)
    # One row per cell and probe (the newest): one INSERT may not update a row twice.
    references = list(
        {
            (r.target_id, r.probe_pk): {
                "target_id": r.target_id,
                "probe_pk": r.probe_pk,
                "run_id": run_id,
                "output_text": storable(r.completion.text),
            }
            for run_id, r in zip(run_ids, results, strict=True)
            if r.establishes_reference
        }.values()
    )
    if references:
        # A re-established reference replaces the stored one (never the first answer kept forever).
        insert = pg_insert(ReferenceOutputRow).values(references)
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=[ReferenceOutputRow.target_id, ReferenceOutputRow.probe_pk],
                set_={
                    "run_id": insert.excluded.run_id,
                    "output_text": insert.excluded.output_text,
                    "created_at": sa.func.now(),
                },
            )
        )
    return run_ids
