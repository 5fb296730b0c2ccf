"""Leadership of the singleton duties: a lease row in PostgreSQL, and fenced writes.

Detection, alert dispatch, verdicts and rollups run on one replica at a time. A session advisory
lock is not enough for that: a SIGSTOPped leader keeps its session, and so its lock, for as long
as it is frozen. The leader instead holds the row ``leader_lease(name='singleton')`` until its
``deadline``, and renews it only while it runs (every ``lease_s / 3``). Every deadline is taken on
the database's clock (``clock_timestamp()``), so replicas' clocks need not agree.

1. **Take**: ``UPDATE … SET holder = me, epoch = epoch + 1 WHERE holder IS NULL OR deadline <
   clock_timestamp()``; followers try every ``lease_s / 4``, so a hung leader's duties move within
   ``1.25 × lease_s`` of its last renewal.
2. **Renew** the deadline only if it is still ours (same holder and epoch, not yet expired). The
   holder believes it leads only until ``lease_s`` after it *started* its last successful renewal,
   on its own monotonic clock, which runs on while the process is stopped: that local deadline
   falls before the one in the database, so the holder gives up first.
3. **Stop at once** when a renewal finds the lease lost, or the local deadline passes with no
   renewal: the duties are cancelled, and a duty step never starts without a live lease.
4. **Fence**: the duties write through an engine whose every commit first runs, in the same
   transaction, ``SELECT … FROM leader_lease WHERE holder = me AND epoch = mine AND deadline >
   clock_timestamp() FOR SHARE`` and refuses to commit without that row. ``FOR SHARE`` makes a
   takeover wait for the commit or makes the commit fail, so a woken-up old leader can neither
   dispatch (the outbox claim is a commit) nor write findings, alerts or verdicts.
5. A leader frozen mid-transaction would still hold its locks (the alert evaluation's advisory
   lock, rows it wrote) and block its successor's duties: the duties' sessions run with
   ``idle_in_transaction_session_timeout = lease_s``, so PostgreSQL ends such a transaction
   before the lease can be taken over. A duty must not leave a transaction idle that long.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import sqlalchemy as sa
from psycopg.errors import LockNotAvailable
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.errors import LeadershipLost
from canary.service.metrics import ServiceMetrics
from canary.storage.engine import async_engine

log = logging.getLogger(__name__)

LEASE_NAME = "singleton"

_TAKE = sa.text(
    "UPDATE leader_lease SET holder = :holder, epoch = epoch + 1, acquired_at = clock_timestamp(),"
    " deadline = clock_timestamp() + make_interval(secs => :lease_s)"
    " WHERE name = :name AND (holder IS NULL OR deadline IS NULL OR deadline < clock_timestamp())"
    " RETURNING epoch"
)
_RENEW = sa.text(
    "UPDATE leader_lease SET deadline = clock_timestamp() + make_interval(secs => :lease_s)"
    " WHERE name = :name AND holder = :holder AND epoch = :epoch AND deadline > clock_timestamp()"
    " RETURNING epoch"
)
_RELEASE = sa.text(
    "UPDATE leader_lease SET holder = NULL, deadline = NULL"
    " WHERE name = :name AND holder = :holder AND epoch = :epoch"
)
_FENCE = sa.text(
    "SELECT epoch FROM leader_lease"
    " WHERE name = :name AND holder = :holder AND epoch = :epoch AND deadline > clock_timestamp()"
    " FOR SHARE"
)


def new_replica_id() -> str:
    """A replica's identity for this process's lifetime (a restart is a new member)."""
    return uuid.uuid4().hex[:16]


class LeaderLease:
    """This replica's view of the singleton lease; see the module docstring for the protocol."""

    def __init__(
        self,
        engine: AsyncEngine,
        holder: str,
        lease_s: float,
        metrics: ServiceMetrics | None = None,
        name: str = LEASE_NAME,
    ) -> None:
        self.engine, self.holder, self.lease_s, self.name = engine, holder, lease_s, name
        self.metrics = metrics
        self.epoch: int | None = None
        self.valid_until = 0.0  # time.monotonic() after which this replica no longer leads

    @property
    def renew_s(self) -> float:
        return self.lease_s / 3

    @property
    def retry_s(self) -> float:
        return self.lease_s / 4

    def held(self) -> bool:
        """Whether this replica may act as leader now (local clock only; the fence asks the database)."""
        return self.epoch is not None and time.monotonic() < self.valid_until

    def _params(self) -> dict[str, object]:
        return {"name": self.name, "holder": self.holder, "epoch": self.epoch, "lease_s": self.lease_s}

    async def try_take(self) -> bool:
        started = time.monotonic()
        try:
            async with self.engine.begin() as conn:
                # A frozen old leader may hold the row FOR SHARE: wait a little, then try again later.
                await conn.execute(
                    sa.text(f"SET LOCAL lock_timeout = '{max(1, int(self.retry_s * 1000))}ms'")
                )
                await conn.execute(
                    sa.text("INSERT INTO leader_lease (name) VALUES (:name) ON CONFLICT DO NOTHING"),
                    {"name": self.name},
                )
                epoch = await conn.scalar(_TAKE, self._params())
        except sa.exc.OperationalError as exc:
            if isinstance(exc.orig, LockNotAvailable):
                return False
            raise
        if epoch is None:
            return False
        self.epoch, self.valid_until = int(epoch), started + self.lease_s
        return True

    async def renew(self) -> bool:
        """Extend the lease; false (and no longer held) if another replica has it or it expired."""
        started = time.monotonic()
        async with self.engine.begin() as conn:
            epoch = await conn.scalar(_RENEW, self._params())
        if epoch is None:
            self.epoch = None
            return False
        self.valid_until = started + self.lease_s
        return True

    async def keep(self, stop: anyio.Event) -> str:
        """Renew every ``renew_s`` until the lease is lost, expires locally, or ``stop``; says which."""
        while True:
            with anyio.move_on_after(self.renew_s):
                await stop.wait()
            if stop.is_set():
                return "stopped"
            remaining = self.valid_until - time.monotonic()
            if remaining <= 0:
                return "expired"
            try:
                with anyio.fail_after(remaining):
                    if not await self.renew():
                        return "lost"
            except TimeoutError:
                return "expired"
            except Exception as exc:  # the database may be restarting: retry while the lease lasts
                log.warning("leader lease renewal failed: %s", type(exc).__name__)

    async def release(self) -> None:
        """Hand the lease back (if still ours) so a follower takes over at its next try."""
        params, self.epoch = self._params(), None
        if params["epoch"] is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(_RELEASE, params)
            except Exception:
                pass  # it expires on its own

    def check(self, conn: sa.Connection) -> None:
        """The fence, run inside a transaction about to commit; raises :class:`LeadershipLost`."""
        if not self.held() or conn.execute(_FENCE, self._params()).first() is None:
            # Raising here does not roll back: SQLAlchemy marks the transaction finished and the
            # pool would hand out a connection still inside it, writes included. Discarding the
            # connection makes PostgreSQL roll it back.
            conn.invalidate()
            if self.metrics is not None:
                self.metrics.fenced_commits.inc()
            raise LeadershipLost(f"the leader lease (epoch {self.epoch}) is no longer held by {self.holder}")

    def fenced_engine(self, url: str, pool_size: int = 3, application_name: str | None = None) -> AsyncEngine:
        """An engine for the duties: every commit is fenced by :meth:`check`."""
        idle_ms = int(self.lease_s * 1000)
        engine = async_engine(
            url,
            pool_size=pool_size,
            application_name=application_name,
            connect_args={"options": f"-c idle_in_transaction_session_timeout={idle_ms}"},
        )
        event.listen(engine.sync_engine, "commit", self.check)
        return engine


@dataclass(frozen=True)
class Duty:
    """A singleton duty: ``step(now)`` every ``interval_s`` while this replica leads."""

    name: str
    interval_s: float
    step: Callable[[datetime], Awaitable[object]]

    async def run_forever(self, metrics: ServiceMetrics, lease: LeaderLease | None = None) -> None:
        while True:
            if lease is None or lease.held():  # never start a step on a lease that may be gone
                try:
                    await self.step(datetime.now(UTC))
                    metrics.duty_steps.labels(self.name).inc()
                except Exception:  # one failing iteration must not end leadership or the other duties
                    log.exception("singleton duty %s failed", self.name)
                    metrics.duty_errors.labels(self.name).inc()
            await anyio.sleep(self.interval_s)


async def lead(
    lease: LeaderLease,
    make_duties: Callable[[], Sequence[Duty]],
    metrics: ServiceMetrics,
    stop: anyio.Event,
) -> None:
    """Run the duties whenever this replica holds the lease, until ``stop``.

    ``make_duties`` runs once, in a worker thread, before the first try: detection imports
    scipy and more (seconds), which must delay neither readiness nor probes, nor a takeover.

    1. Try to take the lease; on failure (held elsewhere, database down) wait ``retry_s``.
    2. While holding it, run every duty and renew the lease (:meth:`LeaderLease.keep`).
    3. When it is lost or expires, or on ``stop``: cancel the duties, release, and go back to 1.
    """
    duties = await anyio.to_thread.run_sync(make_duties)
    while not stop.is_set():
        try:
            acquired = await lease.try_take()
        except Exception as exc:
            log.warning("leader lease attempt failed: %s", type(exc).__name__)
            acquired = False
        if not acquired:
            with anyio.move_on_after(lease.retry_s):
                await stop.wait()
            continue
        log.info("this replica now runs the singleton duties (lease epoch %s)", lease.epoch)
        metrics.leader.set(1)
        metrics.leader_epoch.set(lease.epoch or 0)
        try:
            async with anyio.create_task_group() as tg:
                for duty in duties:
                    tg.start_soon(duty.run_forever, metrics, lease)
                why = await lease.keep(stop)
                tg.cancel_scope.cancel()
            if why != "stopped":
                log.warning("leader lease %s: singleton duties stopped", why)
        finally:
            metrics.leader.set(0)
            await lease.release()
