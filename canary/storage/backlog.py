"""Results kept while PostgreSQL is unreachable, and written, in order and once, when it returns.

A pass hands its batches to :meth:`ResultBacklog.store`. With nothing queued, a batch is written
at once. When the database cannot be reached (refused, reset, or no answer within
``WRITE_TIMEOUT_S``), the batch joins the backlog: in memory up to ``memory_runs`` runs, then in
a spool file (:mod:`canary.storage.spool`) that also survives a restart. While anything is
queued, new batches queue behind it, so runs reach the database in the order they completed.
:meth:`ResultBacklog.run` writes the queue head first, retrying with backoff.

Group commit: batches that arrive while the writers (``max_writers``) are busy are written
together in one transaction (up to ``GROUP_RUNS`` runs), not one each: the first batch of a group
waits for a writer and writes the group; the others wait for its outcome. A lone batch is written
at once, as before. An outage queues every batch of the group, in arrival order; a refused group
is retried batch by batch, so only the batch at fault raises, to its own caller.

Exactly once: a batch is one transaction, so it is stored whole or not at all; a queued batch
(whose earlier attempt may have committed before the connection broke) skips the runs already
stored, found by their natural key (:func:`unstored`).

Bounded: a batch queued longer than ``bound_s`` is dropped with the rest of its pass (so no pass
is left half-written by the drop), counted by reason and logged, never silently.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.storage.spool import Batch, SpoolFile
from canary.storage.tables import RunRow
from canary.storage.writes import RunResult, write_results

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 15.0  # a write that hangs this long (a frozen server) counts as unreachable
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0
DEFAULT_MEMORY_RUNS = 2_000
DEFAULT_WRITERS = 5  # concurrent direct writes; the service gives its pool size (the pool allows twice)
DRAIN_RUNS = 500  # runs per transaction when writing the backlog
GROUP_RUNS = DRAIN_RUNS  # runs per group commit of direct writes (a longer wait opens the next group)
DROP_REASONS = {
    "expired": "the database was unreachable for longer than the backlog's bound (service.outage_buffer_s)",
    "rejected": "the database refused them",
    "full": "the memory backlog is full and there is no spool directory",
}


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (the batch may be retried)."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | TimeoutError | OSError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def run_key(r: RunResult) -> tuple[Any, ...]:
    return (r.pass_id, r.target_id, r.probe_pk, r.repeat_index, r.session_key or "", r.started_at)


async def unstored(conn: AsyncConnection, batch: Sequence[RunResult]) -> list[RunResult]:
    """The runs of ``batch`` not in the database yet (a batch's runs share one pass).

    Looked up through ``ix_runs_target_started`` (cell and start time), then matched on the
    run's natural key; nothing else is unique about a run.
    """
    starts = [r.started_at for r in batch]
    rows = await conn.execute(
        sa.select(
            RunRow.pass_id, RunRow.target_id, RunRow.probe_pk, RunRow.repeat_index, RunRow.session_key,
            RunRow.started_at,
        ).where(
            RunRow.target_id.in_({r.target_id for r in batch}),
            RunRow.started_at.between(min(starts), max(starts)),
            RunRow.pass_id.in_({r.pass_id for r in batch}),
        )
    )  # fmt: skip
    stored = {(p, t, pk, i, s or "", at) for p, t, pk, i, s, at in rows.all()}
    return [r for r in batch if run_key(r) not in stored]


@dataclass(eq=False)
class WriteGroup:
    """Batches written in one transaction by the task that opened the group (group commit).

    Batches ``[0, settled)`` are finished: stored, queued, or refused (``errors[i]`` set);
    ``done`` is set once all are, and every waiting caller then reads its own outcome.
    """

    batches: list[Sequence[RunResult]] = field(default_factory=list)
    errors: list[Exception | None] = field(default_factory=list)
    runs: int = 0
    settled: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)

    def join(self, runs: Sequence[RunResult]) -> int:
        """Add a batch; returns its index (its caller's outcome is ``errors[index]``)."""
        self.batches.append(runs)
        self.errors.append(None)
        self.runs += len(runs)
        return len(self.batches) - 1

    def outcome(self, index: int) -> None:
        """Raise what the database said of batch ``index``, if it refused it."""
        if (error := self.errors[index]) is not None:
            raise error


class ResultBacklog:
    """Writes result batches, holding them (memory, then ``spool_dir``) while the database is away.

    ``on_drop(reason, runs)`` hears of every drop: ``expired`` (queued past ``bound_s``),
    ``rejected`` (the database refused the batch itself, e.g. invalid data) or ``full`` (past
    ``memory_runs`` with no spool directory).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: Path | None,
        *,
        bound_s: float = 900.0,
        memory_runs: int = DEFAULT_MEMORY_RUNS,
        on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_writers: int = DEFAULT_WRITERS,
    ) -> None:
        self.engine = engine
        # Passes write at once as they end; thousands of cells end many together. Bounded below the
        # pool's size, they queue here instead of on the pool, where a wait would count against
        # WRITE_TIMEOUT_S (as an outage) and starve the membership heartbeat of a connection.
        self.writers = anyio.CapacityLimiter(max_writers)
        self.bound_s = bound_s
        self.memory_runs = memory_runs
        self.on_drop = on_drop
        self.clock = clock
        self.memory: deque[Batch] = deque()
        self.in_memory = 0  # runs in ``memory``
        database = engine.url.render_as_string(hide_password=True)
        self.spool = SpoolFile(spool_dir, database) if spool_dir is not None else None
        self.dropped: Counter[str] = Counter()
        self.dropped_passes: set[Any] = set()  # passes part of which was dropped: drop the rest too
        self.written = 0  # runs written from the backlog
        self.wake = anyio.Event()
        self.writing = anyio.Lock()
        self.isolate = False  # write the head batch alone next: a group of batches was refused
        self.open_group: WriteGroup | None = None  # direct writes waiting for a writer: later ones join
        if self.spool is not None and self.spool.pending_runs:
            log.warning("%d results spooled by an earlier run are waiting for the database", self.runs)

    @property
    def runs(self) -> int:
        """Runs waiting for the database."""
        return self.in_memory + (self.spool.pending_runs if self.spool else 0)

    @property
    def spooled_bytes(self) -> int:
        return self.spool.bytes if self.spool else 0

    def oldest_age_s(self) -> float:
        head = self._head()
        return max(0.0, self.clock() - head.queued_at) if head else 0.0

    def status(self) -> dict[str, Any]:
        """The backlog for ``/readyz``."""
        return {
            "runs": self.runs,
            "spooled_bytes": self.spooled_bytes,
            "oldest_s": round(self.oldest_age_s(), 1),
            "dropped_runs": sum(self.dropped.values()),
        }

    async def store(self, runs: Sequence[RunResult]) -> None:
        """Write ``runs`` (one pass's batch) now, or queue them if the database is unreachable.

        While the writers are busy, the batch joins the open group (or opens one) and is written
        in that group's transaction. Shielded from cancellation: a batch handed over is stored,
        queued or refused before this returns (the group's other callers wait on its writer).
        Raises only what the database says of the data itself (never for an outage).
        """
        if not runs:
            return
        if self.runs:  # queued behind what is waiting, so runs reach the database in order
            self._enqueue(Batch(list(runs), self.clock()))
            self.wake.set()
            return
        group = self.open_group
        if group is not None and group.runs + len(runs) <= GROUP_RUNS:
            index = group.join(runs)
            with anyio.CancelScope(shield=True):
                await group.done.wait()
            group.outcome(index)
            return
        group = self.open_group = WriteGroup()
        group.join(runs)
        with anyio.CancelScope(shield=True):  # the group's followers depend on this task finishing it
            try:
                async with self.writers:
                    if self.open_group is group:
                        self.open_group = None  # closed: later batches open the next group
                    await self._write_group(group)
            finally:
                if self.open_group is group:
                    self.open_group = None
                # All settled, unless interrupted (KeyboardInterrupt): then the rest is queued, not lost.
                self._queue_rest(group)
                group.done.set()
        group.outcome(0)

    async def _write_group(self, group: WriteGroup) -> None:
        """Write a closed group (holding a writer), settling each of its batches.

        1. Something was queued while the group waited (another write found the database away):
           the group queues behind it, in order.
        2. One transaction for all the group's runs; stored: done.
        3. Unreachable: every batch joins the backlog, in arrival order.
        4. Refused (more than one batch): each batch alone, in order, so that only the batch at
           fault is refused (its error goes to its own caller); nothing of the group was committed.
        """
        if self.runs:
            self._queue_rest(group)
            return
        try:
            await self._write([r for batch in group.batches for r in batch], check_stored=False)
            group.settled = len(group.batches)
            return
        except Exception as exc:
            if unreachable(exc):
                self._queue_rest(group, exc)
                return
            if len(group.batches) == 1:
                group.errors[0] = exc
                group.settled = 1
                return
        for index, batch in enumerate(group.batches):
            if self.runs:  # an outage during the retries: the rest goes behind what it queued
                self._queue_rest(group)
                return
            try:
                await self._write(batch, check_stored=False)
            except Exception as exc:
                if unreachable(exc):
                    self._queue_rest(group, exc)
                    return
                group.errors[index] = exc
            group.settled = index + 1

    def _queue_rest(self, group: WriteGroup, exc: BaseException | None = None) -> None:
        """Queue the group's unsettled batches, in order (the database is away, or they must wait)."""
        if group.settled == len(group.batches):
            return
        if exc is not None:
            log.warning("database unreachable (%s): keeping results until it returns", type(exc).__name__)
        now = self.clock()
        for batch in group.batches[group.settled :]:
            self._enqueue(Batch(list(batch), now))
        group.settled = len(group.batches)
        self.wake.set()

    async def run(self) -> None:
        """Write the backlog as the database allows, oldest first; runs until cancelled."""
        delay = RETRY_MIN_S
        while True:
            if not self.runs:
                await self.wake.wait()
                self.wake = anyio.Event()
                continue
            if await self.write_head():
                delay = RETRY_MIN_S
            else:
                await anyio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    async def write_head(self) -> bool:
        """Try to write the oldest batch; False when the database is still unreachable."""
        async with self.writing:  # one writer of the head at a time, or it could be stored twice
            return await self._write_head()

    async def _write_head(self) -> bool:
        self._expire()
        # Several queued passes per transaction, so the backlog drains faster than passes arrive;
        # after a refusal, the head alone, so that only the batch at fault is dropped.
        group = self._oldest(1 if self.isolate else DRAIN_RUNS)
        if not group:
            return True
        runs = [r for batch in group for r in batch.runs]
        try:
            await self._write(runs, check_stored=True)
        except Exception as exc:
            if unreachable(exc):
                return False
            if len(group) > 1:
                self.isolate = True
                return True
            log.exception("the database refused %d queued results; dropping them", len(runs))
            self.isolate = False
            self._drop(group[0], "rejected")
            return True
        self.isolate = False
        self._pop(len(group))
        self.written += len(runs)
        if not self.runs:
            log.info("result backlog written: the database is back")
        return True

    async def drain(self, timeout_s: float) -> bool:
        """Write what is queued for up to ``timeout_s`` (shutdown); True when nothing is left."""
        with anyio.move_on_after(timeout_s):
            while self.runs:
                if not await self.write_head():
                    await anyio.sleep(RETRY_MIN_S)
        return not self.runs

    def close(self) -> None:
        """Keep what memory holds in the spool file (before what is there), for the next start."""
        if self.spool is None:
            return
        if self.memory:
            self.spool.prepend(list(self.memory))
            self.memory.clear()
            self.in_memory = 0
        if self.spool.pending_runs:
            log.warning("%d results left in %s for the next start", self.spool.pending_runs, self.spool.path)
        self.spool.close()

    async def _write(self, runs: Sequence[RunResult], *, check_stored: bool) -> None:
        with anyio.fail_after(WRITE_TIMEOUT_S):
            async with self.engine.begin() as conn:
                await write_results(conn, await unstored(conn, runs) if check_stored else runs)

    def _enqueue(self, batch: Batch) -> None:
        spooling = self.spool is not None and self.spool.pending_runs > 0
        if not spooling and self.in_memory + len(batch.runs) <= self.memory_runs:
            self.memory.append(batch)
            self.in_memory += len(batch.runs)
        elif self.spool is not None:
            self.spool.append(batch)
        else:
            self._count_drop("full", len(batch.runs))

    def _head(self) -> Batch | None:
        if self.memory:
            return self.memory[0]
        return self.spool.head() if self.spool else None

    def _oldest(self, max_runs: int) -> list[Batch]:
        """The oldest batches, up to ``max_runs`` runs, from memory or else from the spool."""
        if self.memory:
            group: list[Batch] = []
            runs = 0
            for batch in self.memory:
                if group and runs + len(batch.runs) > max_runs:
                    break
                group.append(batch)
                runs += len(batch.runs)
            return group
        return self.spool.peek(max_runs) if self.spool else []

    def _pop(self, count: int = 1) -> None:
        if self.memory:
            for _ in range(count):
                self.in_memory -= len(self.memory.popleft().runs)
        elif self.spool is not None:
            self.spool.pop(count)
        if not self.runs:
            self.dropped_passes.clear()

    def _expire(self) -> None:
        """Drop batches queued longer than ``bound_s``, and the rest of their passes (one log line)."""
        now = self.clock()
        runs = 0
        while (head := self._head()) is not None:
            if now - head.queued_at > self.bound_s or head.pass_id in self.dropped_passes:
                self._drop(head, "expired", log_it=False)
                runs += len(head.runs)
            else:
                break
        if runs:
            log.error("dropped %d results (expired): %s", runs, DROP_REASONS["expired"])

    def _drop(self, batch: Batch, reason: str, *, log_it: bool = True) -> None:
        self.dropped_passes.add(batch.pass_id)
        self._pop()
        self._count_drop(reason, len(batch.runs), log_it=log_it)

    def _count_drop(self, reason: str, runs: int, *, log_it: bool = True) -> None:
        self.dropped[reason] += runs
        if log_it:
            log.error("dropped %d results (%s): %s", runs, reason, DROP_REASONS[reason])
        if self.on_drop is not None:
            self.on_drop(reason, runs)
