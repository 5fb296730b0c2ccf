"""``canary serve`` wiring: engine, cell pool, membership, scheduler, singleton duties, HTTP API, shutdown.

Several replicas may share one PostgreSQL. Each registers in ``replicas`` with a heartbeat and
probes the cells it has claimed (:mod:`canary.service.membership`): its share over the live
replicas by rendezvous hashing, or a static ``--shard i/N``. The singleton duties (detection,
alert evaluation and dispatch, deploy verdicts, rollups) run on the replica holding the leader
lease, and write through an engine fenced by it (:mod:`canary.service.leadership`).
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import sqlalchemy as sa
import uvicorn
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import Config
from canary.config.sections import ServiceSpec
from canary.errors import ConfigError
from canary.logs import UVICORN_LOG_CONFIG
from canary.probing.catalog import Catalog
from canary.probing.cells import CellPool
from canary.probing.equivalence_runs import load_scheduled
from canary.probing.scheduler import ProbeScheduler, Shard, plan_jobs
from canary.service.api import ApiContext, create_app
from canary.service.identity import application_name
from canary.service.leadership import Duty, LeaderLease, lead, new_replica_id
from canary.service.membership import Membership
from canary.service.metrics import ServiceMetrics
from canary.storage.backlog import ResultBacklog
from canary.storage.engine import async_engine, default_spool_dir
from canary.storage.partitions import MAINTENANCE_INTERVAL_S, maintain
from canary.storage.rollups import ROLLUP_INTERVAL_S, RollupRefresher
from canary.storage.tables import AlertDeliveryRow, AlertRow
from canary.verdicts.deploys import active_bursts, evaluate_running, running_deploys

__all__ = ["Duty", "Service", "detection_duties"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the service decides how to shut down), with
    events for "listening" and "done"."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()
        self.done = anyio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    async def serve_until_exit(self, sockets: list[socket.socket]) -> None:
        try:
            await self.serve(sockets)
        finally:
            self.done.set()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def spool_dir(spec: ServiceSpec) -> Path:
    """Where results wait for an unreachable database: ``service.spool_dir`` or the default."""
    return Path(spec.spool_dir).expanduser() if spec.spool_dir else default_spool_dir()


def check_spool_dir(spec: ServiceSpec, config_path: Path | str) -> None:
    """Fail at start-up, naming the key, when the spool directory cannot be written."""
    path = spool_dir(spec)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        problem = f"{path} is not a writable directory ({exc.strerror or exc})"
        raise ConfigError(config_path, "service.spool_dir", problem) from None


class Service:
    """One replica: probes the cells it claims, answers HTTP, and leads the singleton duties when it can.

    ``await Service(...).run()`` until :meth:`stop`; with ``task_status`` (``tg.start``) it
    reports itself once the API accepts connections and the scheduler runs.
    """

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        url: str,
        spec: ServiceSpec,
        *,
        token: str | None = None,
        shard: Shard | None = None,
        extra_duties: Callable[[AsyncEngine], list[Duty]] | None = None,
    ) -> None:
        self.config, self.catalog, self.url, self.spec, self.token = config, catalog, url, spec, token
        # None: a share over the live replicas (rendezvous); a Shard: a static share.
        self.shard = shard or (Shard.parse(spec.shard) if spec.shard else None)
        self.extra_duties = extra_duties
        self.metrics = ServiceMetrics()
        self.stopping = anyio.Event()
        self.sock = bind(spec.host, spec.port)
        self.scheduler: ProbeScheduler | None = None
        self.replica_id = new_replica_id()
        self.membership: Membership | None = None
        self.lease: LeaderLease | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    def stop(self) -> None:
        self.stopping.set()

    def ready(self) -> bool:
        return self.scheduler is not None and self.scheduler.started and not self.stopping.is_set()

    def open_backlog(self, engine: AsyncEngine) -> ResultBacklog:
        """The results' holding place through a database outage, exported in ``/metrics``."""
        spool = spool_dir(self.spec)
        backlog = ResultBacklog(
            engine,
            spool,
            bound_s=self.spec.outage_buffer_s,
            memory_runs=self.spec.outage_memory_runs,
            max_writers=self.spec.db_pool_size,  # the overflow stays free for heartbeats and the API
        )
        self.metrics.watch_backlog(backlog)
        return backlog

    def replica(self) -> dict[str, object]:
        """This replica as ``/readyz`` shows it: id, cells probed, leader, live replicas seen."""
        m = self.membership
        return {
            "id": self.replica_id,
            "shard": None if self.shard is None else f"{self.shard.index}/{self.shard.count}",
            "cells": 0 if self.scheduler is None else len(self.scheduler.owned),
            "leader": self.lease is not None and self.lease.held(),
            "live_replicas": 0 if m is None else len(m.members),
        }

    def make_duties(self, engine: AsyncEngine) -> list[Duty]:
        policy = self.spec.verdict
        verdicts = Duty(
            "verdicts", self.spec.verdict_interval_s, lambda now: evaluate_running(engine, policy, now)
        )
        # Dashboards and the status page read rollups (canary.storage.rollups); the leader keeps them fresh.
        rollups = Duty("rollups", ROLLUP_INTERVAL_S, partial(RollupRefresher().step, engine))
        # Day partitions ahead, expired ones dropped (canary.storage.partitions).
        storage = Duty("partitions", MAINTENANCE_INTERVAL_S, partial(maintain, engine, self.config.storage))
        return [verdicts, rollups, storage, *(self.extra_duties(engine) if self.extra_duties else [])]

    async def refresh(self, engine: AsyncEngine) -> None:
        """Bursts for cells under a running deploy; gauges that live in the database."""
        assert self.scheduler is not None
        now = datetime.now(UTC)
        self.scheduler.set_bursts(await active_bursts(engine, now), now)
        self.metrics.running_deploys.set(
            len([d for d in await running_deploys(engine, now) if now < d.ends_at])
        )
        async with engine.connect() as conn:
            firing = await conn.scalar(sa.select(sa.func.count()).where(AlertRow.state == "firing"))
            backlog = sa.select(sa.func.count(), sa.func.min(AlertDeliveryRow.created_at))
            pending, oldest = (await conn.execute(backlog.where(AlertDeliveryRow.status == "pending"))).one()
        self.metrics.open_alerts.set(firing or 0)
        self.metrics.outbox_pending.set(pending)
        self.metrics.outbox_oldest.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    async def _refresh_forever(self, engine: AsyncEngine) -> None:
        while True:
            try:
                await self.refresh(engine)
            except Exception as exc:  # the database may be restarting; probes go on regardless
                log.warning("refresh failed: %s", type(exc).__name__)
            await anyio.sleep(self.spec.refresh_s)

    async def run(self, *, task_status: TaskStatus[Service] = anyio.TASK_STATUS_IGNORED) -> None:
        """1. Open the engines and the cell pool. 2. Start the scheduler (no cells yet) and the
        membership heartbeat, which gives it the cells this replica claims. 3. Serve the API;
        report ready. 4. Lead when the lease can be taken. 5. On stop: close the API, let in-flight
        passes finish within ``shutdown_grace_s`` (the rest are stored as cancelled), hand back the
        cells and the lease, and close the database."""
        engine = async_engine(self.url, pool_size=self.spec.db_pool_size, application_name=application_name())
        lease = self.lease = LeaderLease(engine, self.replica_id, self.spec.leader_lease_s, self.metrics)
        duty_engine = lease.fenced_engine(self.url, application_name=application_name())
        shard = self.shard or Shard()
        membership = self.membership = Membership(
            engine,
            self.replica_id,
            [t.cell for t in self.config.targets if shard.owns(t.cell)],
            self.spec.heartbeat_s,
            self.metrics,
            shard=None if self.shard is None else f"{shard.index}/{shard.count}",
        )
        backlog = self.open_backlog(engine)
        try:
            async with CellPool() as cells, anyio.create_task_group() as tg:
                equivalence = load_scheduled(self.config.probes_dir, self.spec.schedule)
                jobs = plan_jobs(self.config.targets, self.catalog, shard, self.spec.schedule, equivalence)
                self.scheduler = ProbeScheduler(
                    engine,
                    cells,
                    jobs,
                    self.spec.schedule,
                    self.metrics,
                    backlog=backlog,
                    may_probe=membership.may_probe,
                )
                tg.start_soon(backlog.run)
                ctx = ApiContext(
                    engine=engine,
                    metrics=self.metrics,
                    cells=[t.cell for t in self.config.targets],
                    policy=self.spec.verdict,
                    token=self.token,
                    ready=self.ready,
                    deploys_changed=lambda: self.refresh(engine),
                    backlog=backlog.status,
                    replica=self.replica,
                )
                server = _Server(
                    uvicorn.Config(
                        create_app(ctx),
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        log_config=UVICORN_LOG_CONFIG,
                    )
                )
                tg.start_soon(server.serve_until_exit, [self.sock])
                self.scheduler.start(cells=set())
                membership_stop, leader_stop = anyio.Event(), anyio.Event()
                tg.start_soon(membership.run, self.scheduler, membership_stop)
                await server.listening.wait()
                tg.start_soon(self._refresh_forever, engine)
                tg.start_soon(lead, lease, partial(self.make_duties, duty_engine), self.metrics, leader_stop)
                log.info(
                    "serving on %s as replica %s, %d jobs (%s)",
                    self.base_url,
                    self.replica_id,
                    len(jobs),
                    "shard " + membership.shard if membership.shard else "shared over the live replicas",
                )
                task_status.started(self)
                await self.stopping.wait()
                server.should_exit = True
                membership_stop.set()
                await self.scheduler.shutdown(self.spec.shutdown_grace_s)
                if not await backlog.drain(self.spec.shutdown_grace_s):
                    log.warning("database unreachable at shutdown: %d results stay spooled", backlog.runs)
                leader_stop.set()
                with anyio.move_on_after(self.spec.shutdown_grace_s):
                    await server.done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                backlog.close()
                await membership.leave()
                await lease.release()
                await duty_engine.dispose()
                await engine.dispose()
                self.sock.close()


def detection_duties(config: Config) -> Callable[[AsyncEngine], list[Duty]]:
    """A detection round every ``detection.interval_s``, and the alert dispatcher between rounds.

    Nothing is imported until the returned factory runs (on first leadership, in a worker
    thread), so detection's heavy imports never delay start-up; a checkout without detection
    or alerts runs with verdicts only. ``[detection]`` and ``[alerts]`` were validated, and the
    receivers' secrets resolved, when the configuration loaded, so a bad table never gets here.
    """

    def duties(engine: AsyncEngine) -> list[Duty]:
        try:
            from canary.alerting.outbox import OutboxDispatcher
            from canary.alerting.round import detection_round
        except ImportError as exc:  # pragma: no cover - depends on the checkout
            log.warning("detection and alerts are not available: %s", exc)
            return []
        dispatcher = OutboxDispatcher.from_spec(config.alerts, config.path, receivers=config.receivers)

        async def detection(now: datetime) -> None:
            await detection_round(engine, config.detection, config.alerts, dispatcher, now, config.intervals)

        async def dispatch(now: datetime) -> None:
            # Retries between rounds. Runs until leadership ends (the duty's task is cancelled
            # then); restarted if it raises.
            await dispatcher.run(engine, anyio.Event())

        return [Duty("detection", config.detection.interval_s, detection), Duty("dispatch", 1.0, dispatch)]

    return duties
