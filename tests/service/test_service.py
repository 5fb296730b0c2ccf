"""Whole replicas in-process against one PostgreSQL: sharding, singleton hand-over, HTTP, shutdown, CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.cli import main
from canary.config.loader import Config
from canary.config.secrets import reveal
from canary.config.sections import VerdictPolicy
from canary.probing.catalog import Catalog
from canary.probing.scheduler import Shard
from canary.service.app import Duty, Service
from canary.verdicts.deploys import evaluate_running
from tests.service.conftest import FAST, MakeConfig, Upstream, count_runs, eventually

pytestmark = pytest.mark.anyio


def leads(service: Service) -> bool:
    return service.metrics.registry.get_sample_value("canary_singleton_leader") == 1.0


def replica(
    config: Config, catalog: Catalog, url: str, shard: Shard | None, ran: list[str], name: str
) -> Service:
    async def mark(now: datetime) -> None:
        ran.append(name)

    return Service(
        config,
        catalog,
        url,
        config.service,
        token=reveal(config.api_token),
        shard=shard,
        extra_duties=lambda _: [Duty("mark", 0.02, mark)],
    )


async def test_two_replicas_split_the_cells_and_hand_over_the_singleton_duties(
    db_url: str, engine: AsyncEngine, make_config: MakeConfig
) -> None:
    config, catalog = make_config({f"pool{i}": "ok" for i in range(8)}, service=FAST)
    ran: list[str] = []
    a = replica(config, catalog, db_url, Shard(0, 2), ran, "a")
    b = replica(config, catalog, db_url, Shard(1, 2), ran, "b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        assert a.scheduler is not None and b.scheduler is not None
        cells_a = {j.cell for j in a.scheduler.jobs.values()}
        cells_b = {j.cell for j in b.scheduler.jobs.values()}
        assert cells_a and cells_b and not cells_a & cells_b
        assert cells_a | cells_b == {t.cell for t in config.targets}
        for cell in sorted(cells_a | cells_b):
            await eventually(lambda c=cell: _probed(engine, c), f"{cell} probed")
            assert await count_runs(engine, cell) == 1  # once, by its own replica only

        await eventually(lambda: leads(a) or leads(b), "one replica leads")
        leader, follower = (a, b) if leads(a) else (b, a)
        assert not leads(follower)
        await eventually(lambda: len(ran) >= 3, "the leader runs its duties")
        assert set(ran) == {"a" if leader is a else "b"}

        leader.stop()
        await eventually(lambda: leads(follower), "the other replica takes over")
        ran.clear()
        await eventually(lambda: len(ran) >= 3, "duties resume on the new leader")
        assert set(ran) == {"a" if follower is a else "b"}
        follower.stop()


async def _probed(engine: AsyncEngine, cell: str) -> bool:
    return await count_runs(engine, cell) >= 1


async def _passes(engine: AsyncEngine, cell: str, at_least: int) -> bool:
    async with engine.connect() as conn:
        query = (
            "SELECT count(DISTINCT pass_id) FROM runs r JOIN targets t ON t.id = r.target_id"
            " WHERE t.cell = :c"
        )
        return int(await conn.scalar(sa.text(query), {"c": cell}) or 0) >= at_least


def cells(service: Service) -> set[str]:
    return set() if service.scheduler is None else set(service.scheduler.owned)


async def test_replicas_without_a_shard_share_the_cells_and_take_over_a_stopped_ones(
    db_url: str, engine: AsyncEngine, make_config: MakeConfig
) -> None:
    # 16 cells: replica ids are random, and rendezvous hashing gives one of the two every cell
    # with chance 2 / 2**cells (1 in 128 at 8 cells, 3 in 100,000 at 16).
    config, catalog = make_config({f"pool{i}": "ok" for i in range(16)}, service=FAST)
    every = {t.cell for t in config.targets}
    ran: list[str] = []
    a = replica(config, catalog, db_url, None, ran, "a")
    b = replica(config, catalog, db_url, None, ran, "b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        await eventually(lambda: cells(a) and cells(b) and cells(a) | cells(b) == every, "cells shared")
        assert not cells(a) & cells(b)
        async with httpx.AsyncClient(base_url=a.base_url) as client:
            replica_view = (await client.get("/readyz")).json()["replica"]
            assert replica_view["id"] == a.replica_id and replica_view["live_replicas"] == 2
            listed = (await client.get("/api/replicas")).json()
            assert {r["id"] for r in listed} == {a.replica_id, b.replica_id}
            assert sum(r["cells"] for r in listed) == len(every)
            assert sum(r["leader"] for r in listed) == 1
        a.stop()
        await eventually(lambda: cells(b) == every, "the survivor probes every cell")
        b.stop()


async def test_stopping_a_replica_stores_in_flight_requests_as_cancelled(
    db_url: str, engine: AsyncEngine, make_config: MakeConfig, upstream: tuple[Upstream, object]
) -> None:
    up = upstream[0]
    up.gate.clear()
    config, catalog = make_config(
        {"stuck": "hang"}, service=FAST.replace("shutdown_grace_s = 5", "shutdown_grace_s = 0")
    )
    service = Service(config, catalog, db_url, config.service)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            async with httpx.AsyncClient(base_url=service.base_url) as client:
                assert (await client.get("/readyz")).status_code == 200
            await eventually(lambda: up.waiting >= 1, "request in flight")
            service.stop()
    finally:
        up.gate.set()
    assert await count_runs(engine, "m/p/stuck", "AND r.reason = 'cancelled'") == 1
    assert await count_runs(engine, "m/p/stuck") == 1


async def test_the_cli_registers_a_deploy_and_gates_on_its_verdict(
    db_url: str, engine: AsyncEngine, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_TEST_API_TOKEN", "s3cret")
    service_toml = FAST + "\n[service.verdict]\nmin_samples = 5\ndetect_effect = 0.9\n"
    config, catalog = make_config(
        {"canary": "ok", "base": "ok"},
        service='api_token = "env:CANARY_TEST_API_TOKEN"\n' + service_toml,
        interval_s=0.5,  # a verdict counts one observation per probe and pass, so several passes
    )
    service = Service(config, catalog, db_url, config.service, token=reveal(config.api_token))
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(
            main, list(args), env={"CANARY_URL": service.base_url, "CANARY_API_TOKEN": "s3cret"}
        )
        return result.exit_code, result.output

    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        code, out = await anyio.to_thread.run_sync(
            cli,
            "deploy",
            "start",
            "v9",
            "--canary",
            "m/p/canary",
            "--baseline",
            "m/p/base",
            "--duration",
            "3600",
        )
        assert code == 0, out
        code, out = await anyio.to_thread.run_sync(cli, "verdict", "v9")
        assert code == 2 and "PENDING" in out
        for cell in ("m/p/canary", "m/p/base"):
            await eventually(lambda c=cell: _passes(engine, c, 10), f"{cell} probed in 10 passes")
        policy = VerdictPolicy(min_samples=5, detect_effect=0.9)
        await evaluate_running(engine, policy, datetime.now(UTC) + timedelta(hours=2))
        code, out = await anyio.to_thread.run_sync(cli, "verdict", "v9", "--wait", "--json")
        assert code == 0, out
        assert '"verdict": "PASS"' in out
        code, out = await anyio.to_thread.run_sync(cli, "deploy", "list")
        assert code == 0 and "v9" in out and "PASS" in out
        service.stop()


async def test_detection_and_alert_dispatch_run_as_singleton_duties(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    from canary.service.app import detection_duties

    config, _ = make_config({"pool0": "ok"})
    duties = detection_duties(config)(engine)
    assert [d.name for d in duties] == ["detection", "dispatch"]
    detection = duties[0]
    await detection.step(datetime.now(UTC))  # an empty database: no findings, no alerts, no error
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM alerts")) == 0
