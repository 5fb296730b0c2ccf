"""The leader lease against a real PostgreSQL: taking, expiry, hand-back, and fenced commits."""

from __future__ import annotations

import time

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.errors import LeadershipLost
from canary.service.leadership import LeaderLease
from canary.service.metrics import ServiceMetrics

pytestmark = pytest.mark.anyio


async def rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM fence_probe")) or 0)


async def expire(engine: AsyncEngine) -> None:
    """What a frozen holder's lease looks like once its deadline has passed."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE leader_lease SET deadline = clock_timestamp() - interval '1 s'"))


async def test_only_one_replica_takes_the_lease_until_it_expires(engine: AsyncEngine) -> None:
    a, b = LeaderLease(engine, "a", 30.0), LeaderLease(engine, "b", 30.0)
    assert await a.try_take() and a.held()
    assert not await b.try_take() and not b.held()
    await expire(engine)
    assert await b.try_take() and b.held()
    assert not await a.renew() and not a.held()  # the old holder learns it lost the lease
    assert b.epoch == 2


async def test_the_holder_stops_believing_it_leads_when_its_local_deadline_passes(
    engine: AsyncEngine,
) -> None:
    a = LeaderLease(engine, "a", 1.0)
    assert await a.try_take()
    await anyio.sleep(1.05)
    assert not a.held()  # no renewal within lease_s: not leader, whatever the database says
    assert await a.keep(anyio.Event()) == "expired"


async def test_a_released_lease_is_taken_at_once(engine: AsyncEngine) -> None:
    a, b = LeaderLease(engine, "a", 30.0), LeaderLease(engine, "b", 30.0)
    assert await a.try_take()
    await a.release()
    assert await b.try_take()


async def test_commits_of_a_replica_that_lost_the_lease_are_refused(db_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE fence_probe (x int)"))
    metrics = ServiceMetrics()
    a, b = LeaderLease(engine, "a", 30.0, metrics), LeaderLease(engine, "b", 30.0)
    fenced = a.fenced_engine(db_url)
    try:
        assert await a.try_take()
        async with fenced.begin() as conn:
            await conn.execute(sa.text("INSERT INTO fence_probe VALUES (1)"))
        assert await rows(engine) == 1

        await expire(engine)  # a froze past its deadline: it still believes it leads (local clock)
        a.valid_until = time.monotonic() + 30
        assert a.held()
        assert await b.try_take()
        with pytest.raises(LeadershipLost):
            async with fenced.begin() as conn:
                await conn.execute(sa.text("INSERT INTO fence_probe VALUES (2)"))
        assert await rows(engine) == 1  # the old leader's write did not land
        assert metrics.registry.get_sample_value("canary_singleton_fenced_commits_total") == 1
    finally:
        await fenced.dispose()


async def test_a_holder_frozen_inside_a_transaction_is_ended_by_the_server_before_a_takeover(
    db_url: str, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE fence_probe (x int)"))
    a, b = LeaderLease(engine, "a", 1.0), LeaderLease(engine, "b", 1.0)
    fenced = a.fenced_engine(db_url)
    try:
        assert await a.try_take()
        async with fenced.connect() as conn:
            await conn.execute(sa.text("INSERT INTO fence_probe VALUES (1)"))
            await conn.run_sync(a.check)  # the lease row FOR SHARE, as a commit takes it
            assert not await b.try_take()  # locked, and not expired
            await anyio.sleep(1.5)  # "frozen" past the lease: PostgreSQL ends the idle transaction
            assert await b.try_take()
            with pytest.raises(LeadershipLost):
                await conn.commit()
        assert await rows(engine) == 0
    finally:
        await fenced.dispose()
