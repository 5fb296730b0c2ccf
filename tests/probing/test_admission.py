"""The pass admission limit: falls below what runs while the event loop lags, grows back only when used."""

from __future__ import annotations

import time

import anyio
import pytest

from canary.probing.admission import FLOOR, LoopLagMonitor, PassAdmission, next_limit


def test_over_the_lag_target_the_limit_falls_below_what_runs_now() -> None:
    assert next_limit(10_000, lag_s=0.3, running=500, target_s=0.1, ceiling=10_000) == 350
    # Already below 70 % of what runs: unchanged while the running passes drain.
    assert next_limit(300, lag_s=0.3, running=400, target_s=0.1, ceiling=10_000) == 280
    assert next_limit(200, lag_s=0.3, running=400, target_s=0.1, ceiling=10_000) == 200
    assert next_limit(6, lag_s=9.0, running=2, target_s=0.1, ceiling=10_000) == FLOOR


def test_under_half_the_target_a_limit_in_use_grows_by_a_tenth_up_to_the_ceiling() -> None:
    assert next_limit(100, lag_s=0.01, running=95, target_s=0.1, ceiling=10_000) == 110
    assert next_limit(4, lag_s=0.01, running=4, target_s=0.1, ceiling=10_000) == 5
    assert next_limit(9_990, lag_s=0.0, running=9_990, target_s=0.1, ceiling=10_000) == 10_000


def test_an_unused_limit_or_a_lag_near_the_target_leaves_the_limit_alone() -> None:
    assert next_limit(100, lag_s=0.01, running=20, target_s=0.1, ceiling=10_000) == 100
    assert next_limit(100, lag_s=0.07, running=100, target_s=0.1, ceiling=10_000) == 100


@pytest.mark.anyio
async def test_a_blocked_event_loop_shows_as_lag_and_lowers_the_limit_of_a_busy_admission() -> None:
    limits: list[int] = []
    lags: list[float] = []
    admission = PassAdmission(ceiling=1_000, target_s=0.1, on_limit=limits.append)

    def observe(lag_s: float) -> None:
        lags.append(lag_s)
        admission.observe(lag_s)

    async with anyio.create_task_group() as tg:
        for _ in range(50):  # fifty passes hold their slots (waiting on the network, say)
            await admission.limiter.acquire_on_behalf_of(object())
        tg.start_soon(LoopLagMonitor(observe, period_s=0.05).run)
        await anyio.sleep(0.1)
        time.sleep(0.4)  # CPU work: the loop wakes nothing meanwhile  # noqa: ASYNC251
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert max(lags) >= 0.3
    assert limits[:2] == [1_000, 35]  # from the ceiling to 70 % of the fifty running, once
    assert limits[2:] == sorted(limits[2:]) and len(limits) > 2  # then back up: all fifty still run
