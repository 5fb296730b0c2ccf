"""``canary serve`` wiring: engine, cell pool, scheduler, singleton duties, HTTP API, shutdown.

Several replicas may share one PostgreSQL. Each schedules its own shard of cells in memory
(:mod:`canary.probing.scheduler`); the singleton duties (detection, alert evaluation and dispatch,
deploy verdicts) run on exactly one replica at a time, the one holding a PostgreSQL advisory
lock on a dedicated connection. A replica that dies loses its connection and with it the lock;
the others retry every ``lock_retry_s`` and one of them takes over.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import sqlalchemy as sa
import uvicorn
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from canary.config.loader import Config
from canary.config.sections import ServiceSpec
from canary.logs import UVICORN_LOG_CONFIG
from canary.probing.catalog import Catalog
from canary.probing.cells import CellPool
from canary.probing.scheduler import ProbeScheduler, Shard, plan_jobs
from canary.service.api import ApiContext, create_app
from canary.service.identity import LOCK_KEY, application_name
from canary.service.metrics import ServiceMetrics
from canary.storage.backlog import ResultBacklog
from canary.storage.engine import async_engine, default_spool_dir
from canary.storage.partitions import MAINTENANCE_INTERVAL_S, maintain
from canary.storage.rollups import ROLLUP_INTERVAL_S, RollupRefresher
from canary.storage.tables import AlertDeliveryRow, AlertRow
from canary.verdicts.deploys import active_bursts, evaluate_running, running_deploys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duty:
    """A singleton duty: ``step(now)`` every ``interval_s`` while this replica leads."""

    name: str
    interval_s: float
    step: Callable[[datetime], Awaitable[object]]

    async def run_forever(self, metrics: ServiceMetrics) -> None:
        while True:
            try:
                await self.step(datetime.now(UTC))
            except Exception:  # one failing iteration must not end leadership or the other duties
                log.exception("singleton duty %s failed", self.name)
                metrics.duty_errors.labels(self.name).inc()
            await anyio.sleep(self.interval_s)


class SingletonLock:
    """``pg_try_advisory_lock`` held on a dedicated autocommit connection (never a pooled one:
    returning it to a pool would keep the lock on a connection nobody watches)."""

    def __init__(self, url: str, key: int = LOCK_KEY) -> None:
        # Named, so the status page can tell which replica holds the lock (canary.service.identity).
        self.engine = create_async_engine(
            url, poolclass=NullPool, connect_args={"application_name": application_name(leader=True)}
        )
        self.key = key
        self.conn: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        conn = await self.engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}))
        except BaseException:
            await conn.close()
            raise
        if got:
            self.conn = conn
        else:
            await conn.close()
        return got

    async def alive(self) -> bool:
        """Whether the holding connection still answers (if it died, the server dropped the lock)."""
        if self.conn is None:
            return False
        try:
            with anyio.fail_after(10):
                await self.conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                except Exception:
                    pass  # a dead connection has released the lock already
                try:
                    await conn.close()
                except Exception:
                    pass

    async def dispose(self) -> None:
        await self.release()
        await self.engine.dispose()


async def lead(
    lock: SingletonLock,
    make_duties: Callable[[], Sequence[Duty]],
    metrics: ServiceMetrics,
    retry_s: float,
    stop: anyio.Event,
) -> None:
    """Run the duties whenever this replica holds the lock, until ``stop``.

    ``make_duties`` runs once, in a worker thread, when the lock is first taken: detection
    imports scipy and more (seconds), which must delay neither readiness nor probes.

    1. Try the lock; on failure (held elsewhere, database down) wait ``retry_s`` and try again.
    2. While holding it, run every duty and check every ``retry_s`` that the connection lives.
    3. On a dead connection or ``stop``: cancel the duties, release, and go back to 1 (or return).
    """
    duties: Sequence[Duty] | None = None
    while not stop.is_set():
        try:
            acquired = await lock.try_acquire()
        except Exception as exc:
            log.warning("singleton lock attempt failed: %s", type(exc).__name__)
            acquired = False
        if not acquired:
            with anyio.move_on_after(retry_s):
                await stop.wait()
            continue
        log.info("this replica now runs the singleton duties")
        metrics.leader.set(1)
        try:
            if duties is None:
                duties = await anyio.to_thread.run_sync(make_duties)
            async with anyio.create_task_group() as tg:
                for duty in duties:
                    tg.start_soon(duty.run_forever, metrics)
                while not stop.is_set() and await lock.alive():
                    with anyio.move_on_after(retry_s):
                        await stop.wait()
                tg.cancel_scope.cancel()
        finally:
            metrics.leader.set(0)
            await lock.release()


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


class Service:
    """One replica: probes its shard, answers HTTP, and leads the singleton duties when it can.

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
        self.shard = shard or Shard.parse(spec.shard)
        self.extra_duties = extra_duties
        self.metrics = ServiceMetrics()
        self.stopping = anyio.Event()
        self.sock = bind(spec.host, spec.port)
        self.scheduler: ProbeScheduler | None = None

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
        spool = Path(self.spec.spool_dir).expanduser() if self.spec.spool_dir else default_spool_dir()
        backlog = ResultBacklog(
            engine, spool, bound_s=self.spec.outage_buffer_s, memory_runs=self.spec.outage_memory_runs
        )
        self.metrics.watch_backlog(backlog)
        return backlog

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
        """1. Open the engine and the cell pool. 2. Start the scheduler with this shard's jobs.
        3. Serve the API; report ready. 4. Lead when possible. 5. On stop: close the API, let
        in-flight passes finish within ``shutdown_grace_s`` (the rest are stored as cancelled),
        hand the lock back and close the database."""
        engine = async_engine(self.url, pool_size=self.spec.db_pool_size, application_name=application_name())
        lock = SingletonLock(self.url)
        backlog = self.open_backlog(engine)
        try:
            async with CellPool() as cells, anyio.create_task_group() as tg:
                jobs = plan_jobs(self.config.targets, self.catalog, self.shard, self.spec.schedule)
                self.scheduler = ProbeScheduler(
                    engine, cells, jobs, self.spec.schedule, self.metrics, backlog=backlog
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
                self.scheduler.start()
                await server.listening.wait()
                tg.start_soon(self._refresh_forever, engine)
                leader_stop = anyio.Event()
                tg.start_soon(
                    lead,
                    lock,
                    partial(self.make_duties, engine),
                    self.metrics,
                    self.spec.lock_retry_s,
                    leader_stop,
                )
                log.info(
                    "serving on %s, %d jobs (shard %d/%d)",
                    self.base_url,
                    len(jobs),
                    *vars(self.shard).values(),
                )
                task_status.started(self)
                await self.stopping.wait()
                server.should_exit = True
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
                await lock.dispose()
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
