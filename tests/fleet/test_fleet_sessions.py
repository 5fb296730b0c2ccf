"""A session probe set through the fleet with canary's own runner: answers, scores and stickiness."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import Target, build_config
from canary.fleet import fleet_targets
from canary.fleet.running import RunningFleet
from canary.probing.catalog import Catalog
from canary.probing.runner import run_pass

pytestmark = pytest.mark.anyio


def session_targets(fleet: RunningFleet, cells: list[str], provider: str, sessions: int) -> list[Target]:
    tables = [
        {**t, "sessions": sessions}
        for t in fleet_targets(fleet.config, fleet.base_url, provider=provider)
        if f"{t['model']}/{t['platform']}/{t['pool']}" in cells
    ]
    targets = list(build_config({"targets": tables}, "<fleet-session-tests>").targets)
    assert len(targets) == len(cells)
    return targets


async def runs_by_turn(engine: AsyncEngine) -> list[sa.Row[tuple[str, str, str, str, str | None, bool]]]:
    async with engine.connect() as conn:
        query = (
            "SELECT t.provider, p.probe_id, r.session_key, r.served_pool, r.output_text, "
            "bool_and(s.passed) AS passed "
            "FROM runs r JOIN probes p ON p.id = r.probe_pk JOIN targets t ON t.id = r.target_id "
            "JOIN scores s ON s.run_id = r.id AND s.created_at = r.started_at"
            " GROUP BY t.provider, p.probe_id, r.id, r.started_at"
        )
        return list((await conn.execute(sa.text(query))).all())


async def test_session_turns_are_answered_with_their_references_in_chat_and_completion_mode(
    engine: AsyncEngine, fleet: RunningFleet, catalog: Catalog
) -> None:
    turns = catalog.select("session-en")
    assert len(turns) >= 3 and all(t.turn is not None for t in turns)
    cell = ["canary-small/cloud-a/short-context"]
    targets = session_targets(fleet, cell, "openai-chat", 2) + session_targets(
        fleet, cell, "openai-completions", 2
    )
    # Same cell name, two providers: one pass each, as two configurations would run them.
    for target in targets:
        summary = await run_pass(engine, [target], turns)
        assert summary.stored == 2 * len(turns) and summary.failed_runs == 0
    rows = await runs_by_turn(engine)
    references = {t.id: t.spec.reference_answer for t in turns}
    assert len(rows) == 2 * 2 * len(turns)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]
    assert all((r.output_text or "").strip() == references[r.probe_id] for r in rows)


async def test_a_sticky_misroute_keeps_every_turn_of_a_conversation_on_one_pool(
    engine: AsyncEngine, fleet: RunningFleet, catalog: Catalog
) -> None:
    fleet.set_fault(fault="misroute", platform="first-party", fraction=0.5)
    [target] = session_targets(fleet, ["canary-small/first-party/front-door"], "openai-chat", 12)
    turns = catalog.select("session-en")
    for _ in range(2):
        await run_pass(engine, [target], turns)
    pools: dict[str, set[str]] = {}
    for r in await runs_by_turn(engine):
        pools.setdefault(r.session_key, set()).add(r.served_pool)
    assert len(pools) == 12
    assert all(len(seen) == 1 for seen in pools.values()), pools
    assert {next(iter(seen)) for seen in pools.values()} == {"short-context", "long-context"}
