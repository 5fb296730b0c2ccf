"""Detection's reads of the equivalence runs: what :mod:`canary.detection.equivalence` compares.

The probe versions of the ``equivalence.forced``, ``equivalence.greedy`` and
``equivalence.sampled`` sets are read once (their specs say which characters of an echo are the
scored continuation), then the window's successful runs of those versions: forced runs' token
log-probabilities (decoded from the compressed column), greedy runs' texts. Of the sampled runs
(when ``sampled``) only counts: per cell and probe version, with each cell's latest sampled run
and its sampled passes in the window (how often the sampled test looks, see
:mod:`canary.detection.equivalence`); :func:`read_sampled` then reads, in time order, the texts
of just the cells a round tests and their chosen peers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.detection.equivalence import CellRuns, mean_logprobs
from canary.probing.equivalence_runs import SETS
from canary.stats.audit import continuation_span
from canary.storage import logprobs
from canary.storage.tables import ProbeRow, RunRow, TargetRow


def _window(since: datetime, until: datetime, pks: Sequence[int]) -> tuple[sa.ColumnElement[bool], ...]:
    """The successful runs of probe versions ``pks`` started in ``(since, until]``."""
    return (
        RunRow.probe_pk.in_(list(pks)), RunRow.status == "ok", RunRow.started_at > since,
        RunRow.started_at <= until,
    )  # fmt: skip


async def cell_runs(
    conn: AsyncConnection,
    since: datetime,
    until: datetime,
    cells: Sequence[str] | None = None,
    *,
    sampled: bool = False,
) -> dict[int, CellRuns]:
    """Each cell's forced and greedy evidence from runs started in ``(since, until]`` (target id ->
    runs), and when ``sampled`` its sampled runs' counts (their texts: :func:`read_sampled`);
    only the named ``cells`` when given (a deploy's sides)."""
    sets = [SETS["forced"], SETS["greedy"], *([SETS["sampled"]] if sampled else [])]
    rows = await conn.execute(
        sa.select(ProbeRow.id, ProbeRow.probe_id, ProbeRow.probe_set, ProbeRow.spec).where(
            ProbeRow.probe_set.in_(sets)
        )
    )
    versions = {pk: (probe_id, probe_set, spec) for pk, probe_id, probe_set, spec in rows.all()}
    if not versions:
        return {}
    scored_sets = (SETS["forced"], SETS["greedy"])
    query = (
        sa.select(RunRow.target_id, RunRow.probe_pk, RunRow.output_text, RunRow.token_logprobs)
        .where(*_window(since, until, [pk for pk, v in versions.items() if v[1] in scored_sets]))
        .order_by(RunRow.started_at, RunRow.id)
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
    sampled_pks = [pk for pk, v in versions.items() if v[1] == SETS["sampled"]]
    if sampled_pks and cells is None:
        counts = (
            sa.select(RunRow.target_id, RunRow.probe_pk, sa.func.count(), sa.func.max(RunRow.id),
                      sa.func.count(sa.distinct(RunRow.pass_id)),
                      sa.func.array_agg(aggregate_order_by(RunRow.pass_id, RunRow.id.desc()))[1])
            .where(*_window(since, until, sampled_pks), RunRow.output_text.is_not(None))
            .group_by(RunRow.target_id, RunRow.probe_pk)
        )  # fmt: skip
        for target_id, probe_pk, n, latest, seen, pass_id in (await conn.execute(counts)).all():
            cell = out[target_id]
            cell.sampled_counts[f"{versions[probe_pk][0]}#{probe_pk}"] = int(n)
            if latest > cell.sampled_latest:
                cell.sampled_latest, cell.sampled_pass = int(latest), str(pass_id)
            cell.sampled_passes = max(cell.sampled_passes, int(seen))
    return dict(out)


async def read_sampled(
    conn: AsyncConnection,
    evidence: Mapping[int, CellRuns],
    since: datetime,
    until: datetime,
    targets: set[int],
) -> None:
    """Fill the sampled texts of ``targets`` (in time order) into their ``evidence``."""
    if not targets:
        return
    rows = await conn.execute(
        sa.select(ProbeRow.id, ProbeRow.probe_id).where(ProbeRow.probe_set == SETS["sampled"])
    )
    names = {pk: probe_id for pk, probe_id in rows.all()}
    query = (
        sa.select(RunRow.target_id, RunRow.probe_pk, RunRow.output_text)
        .where(*_window(since, until, list(names)), RunRow.output_text.is_not(None))
        .where(RunRow.target_id.in_(sorted(targets)))
        .order_by(RunRow.started_at, RunRow.id)
    )
    for target_id, probe_pk, text in (await conn.execute(query)).all():
        if text is not None:
            evidence[target_id].sampled.setdefault(f"{names[probe_pk]}#{probe_pk}", []).append(text)
