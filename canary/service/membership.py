"""Replica membership: heartbeats in PostgreSQL, cells spread over the live replicas, per-cell claims.

Every ``heartbeat_s / 2`` a replica runs one :meth:`Membership.tick`, one transaction:

1. Write its heartbeat (``replicas.heartbeat_at``, on the database's clock).
2. Read the live members: a heartbeat within ``1.5 × heartbeat_s``. Rows silent for an hour are
   deleted (their claims go with them).
3. Choose the cells it wants: a static ``--shard i/N``'s cells, or else the cells rendezvous
   hashing gives it among the live replicas without a static shard (:mod:`canary.service.rendezvous`).
4. Release its claims on cells it no longer wants (once no pass on them is running) and claim the
   ones it wants, for ``1.5 × heartbeat_s``: a claim held by another replica changes hands only
   once it has expired or been released.
5. Probe exactly the claimed cells (:meth:`ProbeScheduler.set_cells`).

A replica that dies stops renewing: within ``1.5 × heartbeat_s`` it is no longer live and its
claims have expired, and the survivors' next tick (at most ``heartbeat_s / 2`` later) claims its
cells and probes them at once: a dead replica's cells are probed again within ``2 × heartbeat_s``.

Why claims rather than a membership epoch: two replicas can briefly disagree about who is live (one
has not yet seen a heartbeat stop), and a frozen or cut-off replica cannot learn that the others
moved on. A claim settles the first in the database (one row per cell, taken by a conditional
upsert) and the second on the holder's own monotonic clock: a pass starts only while the claim,
counted from the start of the tick that renewed it, is still valid, and the database will not hand
the cell over before the same deadline. A replica woken from SIGSTOP therefore probes nothing until
its next tick has re-taken or dropped its cells. While the database cannot be reached at all, a
replica keeps probing the cells it held (nobody can take a claim over then, and results are kept
until the database returns); only a replica cut off from the database while the others still
reach it could then probe a cell its successor also probes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.service.metrics import ServiceMetrics
from canary.service.rendezvous import cells_of

log = logging.getLogger(__name__)

PRUNE_AFTER_S = 3600.0  # a replica row silent this long is deleted

_HEARTBEAT = sa.text(
    "INSERT INTO replicas (id, host, pid, shard, started_at, heartbeat_at, ttl_s)"
    " VALUES (:id, :host, :pid, :shard, clock_timestamp(), clock_timestamp(), :ttl)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), ttl_s = EXCLUDED.ttl_s"
)
LIVE = "r.heartbeat_at > clock_timestamp() - make_interval(secs => r.ttl_s)"  # SQL: replica r is live
_LIVE = sa.text(f"SELECT id, shard FROM replicas r WHERE {LIVE}")
_PRUNE = sa.text("DELETE FROM replicas WHERE heartbeat_at < clock_timestamp() - make_interval(secs => :age)")
_RELEASE = sa.text("DELETE FROM cell_claims WHERE replica_id = :id AND NOT (cell = ANY(:keep))")
_CLAIM = sa.text(
    "INSERT INTO cell_claims (cell, replica_id, expires_at)"
    " SELECT unnest(CAST(:cells AS text[])), :id, clock_timestamp() + make_interval(secs => :ttl)"
    " ON CONFLICT (cell) DO UPDATE SET replica_id = EXCLUDED.replica_id, expires_at = EXCLUDED.expires_at"
    " WHERE cell_claims.replica_id = EXCLUDED.replica_id OR cell_claims.expires_at < clock_timestamp()"
    " RETURNING cell"
)


@dataclass(frozen=True)
class Member:
    """A live replica as the last tick saw it."""

    id: str
    shard: str | None


class CellOwner(Protocol):
    """What a membership tick drives: :class:`canary.probing.scheduler.ProbeScheduler`."""

    def set_cells(self, cells: set[str], now: datetime | None = None) -> None: ...

    def running_cells(self) -> set[str]: ...


class Membership:
    """This replica's heartbeat and cell claims; see the module docstring for the protocol."""

    def __init__(
        self,
        engine: AsyncEngine,
        replica_id: str,
        cells: Sequence[str],
        heartbeat_s: float,
        metrics: ServiceMetrics,
        *,
        shard: str | None = None,
    ) -> None:
        self.engine, self.id, self.cells, self.heartbeat_s = engine, replica_id, sorted(cells), heartbeat_s
        self.metrics, self.shard = metrics, shard
        self.claimed: set[str] = set()  # cells whose claim this replica renewed at its last tick
        self.allowed: set[str] = set()  # claimed and wanted: passes may start on these
        self.members: list[Member] = []
        self.valid_until = 0.0  # time.monotonic() after which the claims may have expired
        self.database_down = False
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.all_cells = frozenset(self.cells)
        self._share: tuple[tuple[str, ...], frozenset[str]] | None = None  # members -> their share

    @property
    def ttl_s(self) -> float:
        return 1.5 * self.heartbeat_s

    @property
    def tick_s(self) -> float:
        return self.heartbeat_s / 2

    def may_probe(self, cell: str) -> bool:
        """Whether a pass on ``cell`` may start now (checked by the scheduler before each pass)."""
        if cell not in self.allowed:
            return False
        return self.database_down or time.monotonic() < self.valid_until

    def wanted(self, members: Sequence[Member]) -> frozenset[str]:
        if self.shard is not None:
            return self.all_cells
        dynamic = tuple(sorted({m.id for m in members if m.shard is None} | {self.id}))
        # Hashing every cell against every member is ~40,000 digests at 10,000 cells and 4
        # replicas: done when the members change, not every tick.
        if self._share is None or self._share[0] != dynamic:
            self._share = (dynamic, frozenset(cells_of(self.id, self.cells, dynamic)))
        return self._share[1]

    async def tick(self, owner: CellOwner) -> None:
        """Steps 1 to 5 of the module docstring."""
        started = time.monotonic()
        async with self.engine.begin() as conn:
            await conn.execute(
                _HEARTBEAT,
                {"id": self.id, "host": self.host, "pid": self.pid, "shard": self.shard, "ttl": self.ttl_s},
            )
            members = [Member(*row) for row in (await conn.execute(_LIVE)).all()]
            await conn.execute(_PRUNE, {"age": PRUNE_AFTER_S})
            wanted = self.wanted(members)
            # Stop starting passes on cells no longer wanted before looking at what runs, with no
            # await in between: a pass that started after the look would run on a released cell.
            self._allow(self.allowed & wanted, owner)
            keep = wanted | (owner.running_cells() & self.claimed)
            got = await self._claim(conn, sorted(keep))
        self.members, self.valid_until, self.database_down = members, started + self.ttl_s, False
        self.claimed = got
        self._allow(got & wanted, owner)
        self.metrics.replicas_live.set(len(members))

    def _allow(self, cells: set[str], owner: CellOwner) -> None:
        self.allowed = cells
        owner.set_cells(cells)
        self.metrics.replica_cells.set(len(cells))

    async def _claim(self, conn: AsyncConnection, keep: list[str]) -> set[str]:
        await conn.execute(_RELEASE, {"id": self.id, "keep": keep})
        if not keep:
            return set()
        rows = await conn.execute(_CLAIM, {"cells": keep, "id": self.id, "ttl": self.ttl_s})
        return set(rows.scalars())

    async def run(self, owner: CellOwner, stop: anyio.Event) -> None:
        """Tick every ``tick_s`` until ``stop``; a failed tick keeps the cells held (see above)."""
        while not stop.is_set():
            try:
                with anyio.fail_after(self.ttl_s):  # a tick slower than this renews nothing
                    await self.tick(owner)
            except Exception as exc:
                log.warning("membership heartbeat failed: %s", type(exc).__name__)
                self.metrics.membership_errors.inc()
                # Only a refused or broken connection says "database down" (keep probing what we
                # hold). A timeout may be this process waking from a stall with its claims gone;
                # TimeoutError is an OSError, so it is ruled out first.
                self.database_down = not isinstance(exc, TimeoutError) and isinstance(
                    exc, sa.exc.OperationalError | sa.exc.InterfaceError | OSError
                )
            with anyio.move_on_after(self.tick_s):
                await stop.wait()

    async def leave(self) -> None:
        """Drop this replica's row and claims, so the others take its cells at their next tick."""
        self.claimed, self.allowed = set(), set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(sa.text("DELETE FROM replicas WHERE id = :id"), {"id": self.id})
            except Exception:
                pass  # its heartbeat and claims expire on their own


# Every registered replica: live or not, its claimed cells, whether it leads (the API, the status page).
REPLICAS_SQL = f"""
SELECT r.id, r.host, r.pid, r.shard, r.started_at, r.heartbeat_at, {LIVE} AS live,
       (SELECT count(*) FROM cell_claims c WHERE c.replica_id = r.id AND c.expires_at > clock_timestamp())
           AS cells,
       EXISTS (SELECT 1 FROM leader_lease l WHERE l.holder = r.id AND l.deadline > clock_timestamp())
           AS leader
FROM replicas r ORDER BY r.started_at, r.id
"""


async def membership_view(engine: AsyncEngine) -> list[dict[str, object]]:
    """``/api/replicas``: :data:`REPLICAS_SQL` as JSON."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(REPLICAS_SQL))).all()
    return [
        {**r._asdict(), "started_at": r.started_at.isoformat(), "heartbeat_at": r.heartbeat_at.isoformat()}
        for r in rows
    ]
