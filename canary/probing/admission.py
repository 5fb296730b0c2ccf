"""How many passes may run at once: as many as the event loop can serve without falling behind.

Why: a replica given more passes than its CPU can serve (10,000 cells on a shared 2-core
machine) used to start them all. asyncio serves ready tasks in turn, so every pass slowed down
together, all of them ran past their time limit, were cancelled with their work thrown away, and
stored runs fell to almost nothing; heartbeats waiting behind them missed their deadline too.
Queued in order instead, passes finish at the rate the CPU allows.

A fixed cap would be wrong the other way: against real models a pass mostly waits on the network
(seconds per answer), and 10,000 cells then need thousands of passes in flight, hanging cells
included. So the limit follows the event loop's own lag, measured by :class:`LoopLagMonitor`
(how late a short sleep wakes): while the lag stays under ``max_loop_lag_s`` the limit grows back
towards "no limit"; over it, the limit drops below the passes running now (:func:`next_limit`,
additive increase and multiplicative decrease, as TCP does with its window). Waiting on the
network costs no CPU and raises no lag, so hanging cells never shrink the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

LAG_PERIOD_S = 0.1  # the lag probe's sleep: short, so a stall shows within a tenth of a second
DECREASE = 0.7  # over the target: the limit falls to this share of the passes running
FLOOR = 4  # never fewer passes than this (a stall of the whole machine must not stop probing)


def next_limit(limit: int, lag_s: float, running: int, target_s: float, ceiling: int) -> int:
    """The admission limit after one lag measurement. Pure.

    Over ``target_s``: ``DECREASE`` of what runs now (not of the limit, which may be far above
    it), at least :data:`FLOOR`. Under half of it, and only while the limit is what holds passes
    back (nine tenths of it in use): a tenth more, at least one, up to ``ceiling``; an unused
    limit does not creep up to let a later crowd in at once. Otherwise unchanged, so the limit
    settles instead of oscillating.
    """
    if lag_s > target_s:
        return max(FLOOR, min(limit, int(running * DECREASE)))
    if lag_s < target_s / 2 and running >= 0.9 * limit:
        return min(ceiling, limit + max(1, limit // 10))
    return limit


class PassAdmission:
    """A capacity limiter on passes whose size :meth:`observe` moves with the loop's lag."""

    def __init__(self, ceiling: int, target_s: float, on_limit: Callable[[int], None] | None = None) -> None:
        self.ceiling = max(FLOOR, ceiling)
        self.target_s = target_s
        self.limiter = anyio.CapacityLimiter(self.ceiling)
        self.on_limit = on_limit
        if on_limit:
            on_limit(self.ceiling)

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def running(self) -> int:
        return self.limiter.borrowed_tokens

    def observe(self, lag_s: float) -> None:
        limit = next_limit(self.limit, lag_s, self.running, self.target_s, self.ceiling)
        if limit != self.limit:
            self.limiter.total_tokens = limit  # lowering it lets running passes finish; none start
            if self.on_limit:
                self.on_limit(limit)


class LoopLagMonitor:
    """Measures how late the event loop wakes a short sleep, and reports each measurement."""

    def __init__(self, report: Callable[[float], None], period_s: float = LAG_PERIOD_S) -> None:
        self.report, self.period_s = report, period_s
        self.last_s = 0.0

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            started = time.monotonic()
            await anyio.sleep(self.period_s)
            self.last_s = max(0.0, time.monotonic() - started - self.period_s)
            self.report(self.last_s)
