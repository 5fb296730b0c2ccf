"""Membership ticks against a real PostgreSQL: claims change hands only once expired or released,
and a replica keeps probing what it holds only while the database refuses connections."""

from __future__ import annotations

from datetime import datetime

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.service.membership import Membership
from canary.service.metrics import ServiceMetrics
from canary.storage.engine import async_engine

pytestmark = pytest.mark.anyio

CELLS = [f"m/p/pool{i}" for i in range(12)]


class Scheduler:
    """Stands in for ProbeScheduler: records the cells it is given; ``running`` is set by the test."""

    def __init__(self) -> None:
        self.cells: set[str] = set()
        self.running: set[str] = set()

    def set_cells(self, cells: set[str], now: datetime | None = None) -> None:
        self.cells = set(cells)

    def running_cells(self) -> set[str]:
        return self.running


def member(engine: AsyncEngine, rid: str, heartbeat_s: float = 30.0) -> Membership:
    return Membership(engine, rid, CELLS, heartbeat_s, ServiceMetrics())


async def test_a_new_replica_gets_its_share_only_after_the_holder_released_it(engine: AsyncEngine) -> None:
    a, b = member(engine, "a"), member(engine, "b")
    sa_, sb = Scheduler(), Scheduler()
    await a.tick(sa_)
    assert sa_.cells == set(CELLS)  # alone: every cell
    await b.tick(sb)
    assert sb.cells == set()  # its share is still claimed by a
    await a.tick(sa_)  # a sees b and lets go of b's share
    await b.tick(sb)
    assert sa_.cells and sb.cells and not sa_.cells & sb.cells and sa_.cells | sb.cells == set(CELLS)
    assert all(a.may_probe(c) for c in sa_.cells) and not any(a.may_probe(c) for c in sb.cells)


async def test_a_cell_with_a_pass_running_is_released_only_when_the_pass_ends(engine: AsyncEngine) -> None:
    a, b = member(engine, "a"), member(engine, "b")
    sa_, sb = Scheduler(), Scheduler()
    await a.tick(sa_)
    await b.tick(sb)
    sa_.running = set(CELLS)  # a pass on every cell is running on a
    await a.tick(sa_)
    await b.tick(sb)
    assert sb.cells == set()  # nothing handed over while a's passes run
    assert not any(a.may_probe(c) for c in sa_.cells - a.wanted(a.members))  # but a starts no new pass
    sa_.running = set()
    await a.tick(sa_)
    await b.tick(sb)
    assert sb.cells and not sa_.cells & sb.cells


async def test_a_dead_replicas_claims_expire_and_move(engine: AsyncEngine) -> None:
    a, b = member(engine, "a", heartbeat_s=0.5), member(engine, "b", heartbeat_s=0.5)
    sa_, sb = Scheduler(), Scheduler()
    await a.tick(sa_)
    await b.tick(sb)
    await a.tick(sa_)
    await b.tick(sb)
    assert sa_.cells and sb.cells
    await anyio.sleep(0.8)  # a dies: no more ticks; its claims expire after 1.5 x heartbeat_s
    assert not any(a.may_probe(c) for c in sa_.cells)  # and a itself would not probe them
    await b.tick(sb)
    assert sb.cells == set(CELLS)


async def test_with_the_database_refusing_connections_a_replica_keeps_probing_what_it_holds(
    engine: AsyncEngine,
) -> None:
    a = member(engine, "a", heartbeat_s=0.5)
    sched = Scheduler()
    await a.tick(sched)
    held = set(sched.cells)
    a.engine = async_engine("postgresql+psycopg://canary@127.0.0.1:1/none")  # nothing listens there
    try:
        await anyio.sleep(0.8)
        assert not any(a.may_probe(c) for c in held)  # expired, and no tick has said why yet
        with pytest.raises(sa.exc.OperationalError):
            await a.tick(sched)
        a.database_down = True  # what Membership.run concludes from that error
        assert all(a.may_probe(c) for c in held)  # nobody can take a claim over now
    finally:
        await a.engine.dispose()
        a.engine = engine


async def test_a_tick_that_times_out_is_not_taken_for_a_database_outage(engine: AsyncEngine) -> None:
    a = member(engine, "a", heartbeat_s=0.5)
    sched = Scheduler()
    await a.tick(sched)
    held = set(sched.cells)
    stop = anyio.Event()
    async with engine.connect() as blocker:
        await blocker.execute(sa.text("LOCK TABLE replicas IN EXCLUSIVE MODE"))  # heartbeats now hang
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run, sched, stop)
            await anyio.sleep(2 * a.ttl_s)
            # The database answers (it is this replica that is slow or stalled): the claims lapsed
            # at their deadline, so it starts nothing until a tick has renewed them.
            assert a.metrics.membership_errors._value.get() >= 1
            assert not a.database_down
            assert not any(a.may_probe(c) for c in held)
            await blocker.rollback()
            await anyio.sleep(a.ttl_s)
            assert all(a.may_probe(c) for c in held)
            stop.set()
