"""Per-cell resources shared by every pass on that cell: HTTP client, concurrency, rate limit.

The scheduler runs several probe sets on one cell at once; they must share the cell's
concurrency and requests-per-minute budget and honour a ``retry-after`` that any of them saw.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import httpx

from canary.config.loader import Target
from canary.scoring.determinism import RECENT_QUORUM, reestablished

MAX_RETRY_AFTER_S = 300.0  # a server asking for longer is not trusted beyond this


class RateLimiter:
    """A token bucket: at most ``per_minute`` request starts per minute, bursts of one second's worth."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.lock = anyio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        async with self.lock:  # first come, first served: waiters queue on the lock
            self._refill()
            while self.tokens < 1.0:
                await anyio.sleep((1.0 - self.tokens) / self.rate)
                self._refill()
            self.tokens -= 1.0


@dataclass
class Cell:
    """One cell's shared client and limits."""

    target: Target
    client: httpx.AsyncClient
    concurrency: anyio.CapacityLimiter
    rate: RateLimiter | None = None
    paused_until: float = 0.0  # monotonic time before which no request starts (retry-after)
    clock: Callable[[], float] = field(default=time.monotonic)

    async def slot(self) -> None:
        """Wait for the rate limit, then for any retry-after pause.

        Call it *after* taking a concurrency slot: requests queued on the slot were waiting
        while the 429 that set the pause was in flight, so checking before the wait let them
        all go out the moment it ended. The pause is re-read after each sleep, since another
        429 may have extended it.
        """
        if self.rate is not None:
            await self.rate.acquire()
        # A deadline, not an event: sleeping until it (re-read after each wake) is the wait wanted.
        while (delay := self.paused_until - self.clock()) > 0:  # noqa: ASYNC110
            await anyio.sleep(delay)

    def pause(self, retry_after_s: float | None) -> None:
        if retry_after_s:
            self.paused_until = max(self.paused_until, self.clock() + min(retry_after_s, MAX_RETRY_AFTER_S))


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context for every cell's client.

    A default ``httpx.AsyncClient`` loads the CA bundle into a context of its own: ~0.8 MB and
    tens of milliseconds each, so 1,000 cells cost ~800 MB and stall the event loop on their
    first passes. Shared, it costs that once.
    """
    return httpx.create_ssl_context()


def new_client(target: Target) -> httpx.AsyncClient:
    """One client per cell, its pool sized to the cell's concurrency.

    A single client shared by all cells scales badly (httpcore's pool does per-request work
    over every connection; 80 connections in one pool ran ~4x slower here than 10 pools of 8),
    and separate pools keep one cell's stuck connections from touching another's.
    """
    limits = httpx.Limits(max_connections=target.concurrency, max_keepalive_connections=target.concurrency)
    return httpx.AsyncClient(limits=limits, follow_redirects=False, verify=shared_tls_context())


@dataclass
class Registry:
    """Database ids and reference outputs already known to this process.

    A long-running service runs thousands of passes over the same cells and probe versions;
    recording them (and loading references) once instead of every pass saves three queries
    and an advisory lock that would otherwise serialise every pass in the fleet.
    """

    targets: dict[str, tuple[Target, int]] = field(default_factory=dict)  # cell -> (as synced, id)
    probes: dict[tuple[str, str], int] = field(default_factory=dict)  # (probe id, version) -> row id
    references: dict[tuple[int, int], str] = field(default_factory=dict)  # (target id, probe row) -> text
    references_loaded: set[int] = field(default_factory=set)  # target ids
    recent: dict[tuple[int, int], deque[str]] = field(default_factory=dict)  # latest temperature-0 answers
    lock: anyio.Lock = field(default_factory=anyio.Lock)  # held while registering (registration.py)

    def renew_reference(self, target_id: int, probe_pk: int, text: str) -> bool:
        """Record a temperature-0 answer; True when it (re-)establishes the cell's reference.

        See :func:`canary.scoring.determinism.reestablished`: the first answer, or the cell's
        recent answers agreeing on a new text that the same model's peers do not contradict.
        """
        recent = self.recent.setdefault((target_id, probe_pk), deque(maxlen=RECENT_QUORUM))
        recent.append(text)
        stored = self.references.get((target_id, probe_pk))
        peers: list[str] = []
        if stored is not None and recent.count(text) == len(recent) == RECENT_QUORUM and text != stored:
            model = next((t.spec.model for t, i in self.targets.values() if i == target_id), None)
            peer_ids = [i for t, i in self.targets.values() if t.spec.model == model and i != target_id]
            peers = [self.references[(i, probe_pk)] for i in peer_ids if (i, probe_pk) in self.references]
        renewed = reestablished(stored, list(recent), peers)
        if renewed is None:
            return False
        self.references[(target_id, probe_pk)] = renewed
        return True

    def unsynced_targets(self, targets: Sequence[Target]) -> list[Target]:
        return [t for t in targets if self.targets.get(t.cell, (None, 0))[0] != t]


class CellPool:
    """Cells by name, created on first use and closed together, with their :class:`Registry`."""

    def __init__(self, shared_client: httpx.AsyncClient | None = None) -> None:
        self.cells: dict[str, Cell] = {}
        self.registry = Registry()
        self.shared_client = shared_client
        self.stack = AsyncExitStack()

    async def __aenter__(self) -> CellPool:
        await self.stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.__aexit__(None, None, None)

    async def get(self, target: Target) -> Cell:
        cell = self.cells.get(target.cell)
        if cell is None or cell.target != target:
            client = self.shared_client
            if client is None:
                client = await self.stack.enter_async_context(new_client(target))
            rate = RateLimiter(target.requests_per_minute) if target.requests_per_minute else None
            cell = Cell(target, client, anyio.CapacityLimiter(target.concurrency), rate)
            self.cells[target.cell] = cell
        return cell

    async def get_all(self, targets: Sequence[Target]) -> list[Cell]:
        return [await self.get(t) for t in targets]
