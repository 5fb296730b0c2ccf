"""Detection's reads of the equivalence runs: what :mod:`canary.detection.equivalence` compares.

The probe versions of the ``equivalence.forced``, ``equivalence.greedy`` and
``equivalence.sampled`` sets are read once (their specs say which characters of an echo are the
scored continuation), then the window's successful runs of those versions: forced runs' token
log-probabilities (decoded from the compressed column), greedy and sampled runs' texts, in time
order (the sampled test's pairs follow it). The sampled texts are read only when ``sampled``,
with each cell's latest sampled run and its number of sampled passes in the window (how often
the sampled test looks, see :mod:`canary.detection.equivalence`).
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
    conn: AsyncConnection,
    since: datetime,
    until: datetime,
    cells: Sequence[str] | None = None,
    *,
    sampled: bool = False,
) -> dict[int, CellRuns]:
    """Each cell's forced, greedy (and, when ``sampled``, sampled) evidence from runs started in
    ``(since, until]`` (target id -> runs); only the named ``cells`` when given (a deploy's sides)."""
    sets = [SETS["forced"], SETS["greedy"], *([SETS["sampled"]] if sampled else [])]
    rows = await conn.execute(
        sa.select(ProbeRow.id, ProbeRow.probe_id, ProbeRow.probe_set, ProbeRow.spec).where(
            ProbeRow.probe_set.in_(sets)
        )
    )
    versions = {pk: (probe_id, probe_set, spec) for pk, probe_id, probe_set, spec in rows.all()}
    if not versions:
        return {}
    query = (
        sa.select(RunRow.target_id, RunRow.probe_pk, RunRow.output_text, RunRow.token_logprobs)
        .add_columns(RunRow.id, RunRow.pass_id)
        .where(RunRow.probe_pk.in_(list(versions)), RunRow.status == "ok")
        .where(RunRow.started_at > since, RunRow.started_at <= until)
        .order_by(RunRow.started_at, RunRow.id)
    )
    if cells is not None:
        chosen = sa.select(TargetRow.id).where(TargetRow.cell.in_(list(cells)))
        query = query.where(RunRow.target_id.in_(chosen.scalar_subquery()))
    runs = await conn.execute(query)
    forced: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
    out: dict[int, CellRuns] = defaultdict(CellRuns)
    sampled_passes: dict[int, set[object]] = defaultdict(set)
    for target_id, probe_pk, text, packed, run_id, pass_id in runs.all():
        probe_id, probe_set, spec = versions[probe_pk]
        if probe_set != SETS["forced"]:
            cell = out[target_id]
            texts = cell.greedy if probe_set == SETS["greedy"] else cell.sampled
            if text is not None:
                texts.setdefault(f"{probe_id}#{probe_pk}", []).append(text)
            if probe_set == SETS["sampled"]:
                sampled_passes[target_id].add(pass_id)
                cell.sampled_latest = max(cell.sampled_latest, run_id)
            continue
        tokens = logprobs.decode(packed)
        start, end = len(spec["prompt"]), len(spec.get("completion_prompt") or spec["prompt"])
        scored = continuation_span([(t[0], t[1]) for t in tokens or ()], start, end)
        if scored is not None:
            forced[(target_id, probe_pk)].append(scored)
    for (target_id, probe_pk), passes in forced.items():
        out[target_id].forced[(versions[probe_pk][0], probe_pk)] = mean_logprobs(passes)
    for target_id, seen in sampled_passes.items():
        out[target_id].sampled_passes = len(seen)
    return dict(out)
