"""Detection's reads of the equivalence runs: what :mod:`canary.detection.equivalence` compares.

The probe versions of the ``equivalence.forced`` and ``equivalence.greedy`` sets are read once
(their specs say which characters of an echo are the scored continuation), then the window's
successful runs of those versions: forced runs' token log-probabilities (decoded from the
compressed column), greedy runs' texts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.detection.equivalence import CellRuns, mean_logprobs
from canary.probing.equivalence_runs import SETS
from canary.stats.audit import continuation_span
from canary.storage import logprobs
from canary.storage.tables import ProbeRow, RunRow, TargetRow


async def cell_runs(
    conn: AsyncConnection, since: datetime, until: datetime, cells: Sequence[str] | None = None
) -> dict[int, CellRuns]:
    """Each cell's forced and greedy evidence from runs started in ``(since, until]`` (target id -> runs);
    only the named ``cells`` when given (a deploy's sides)."""
    rows = await conn.execute(
        sa.select(ProbeRow.id, ProbeRow.probe_id, ProbeRow.probe_set, ProbeRow.spec).where(
            ProbeRow.probe_set.in_([SETS["forced"], SETS["greedy"]])
        )
    )
    versions = {pk: (probe_id, probe_set, spec) for pk, probe_id, probe_set, spec in rows.all()}
    if not versions:
        return {}
    query = (
        sa.select(RunRow.target_id, RunRow.probe_pk, RunRow.output_text, RunRow.token_logprobs)
        .where(RunRow.probe_pk.in_(list(versions)), RunRow.status == "ok")
        .where(RunRow.started_at > since, RunRow.started_at <= until)
        .order_by(RunRow.started_at)
    )
    if cells is not None:
        chosen = sa.select(TargetRow.id).where(TargetRow.cell.in_(list(cells)))
        query = query.where(RunRow.target_id.in_(chosen.scalar_subquery()))
    runs = await conn.execute(query)
    forced: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
    out: dict[int, CellRuns] = defaultdict(CellRuns)
    for target_id, probe_pk, text, packed in runs.all():
        probe_id, probe_set, spec = versions[probe_pk]
        if probe_set == SETS["greedy"]:
            if text is not None:
                out[target_id].greedy.setdefault(f"{probe_id}#{probe_pk}", []).append(text)
            continue
        tokens = logprobs.decode(packed)
        start, end = len(spec["prompt"]), len(spec.get("completion_prompt") or spec["prompt"])
        scored = continuation_span([(t[0], t[1]) for t in tokens or ()], start, end)
        if scored is not None:
            forced[(target_id, probe_pk)].append(scored)
    for (target_id, probe_pk), passes in forced.items():
        out[target_id].forced[(versions[probe_pk][0], probe_pk)] = mean_logprobs(passes)
    return dict(out)
