"""Per-cell limits: requests-per-minute, retry-after pauses, stable session keys."""

from __future__ import annotations

import time

import anyio
import pytest

from canary.config.loader import build_config
from canary.probing.cells import MAX_RETRY_AFTER_S, Cell, CellPool, RateLimiter

pytestmark = pytest.mark.anyio


def target(**extra: object):  # type: ignore[no-untyped-def]
    spec = {
        "model": "m",
        "platform": "p",
        "pool": "q",
        "provider": "openai-chat",
        "base_url": "http://x/v1",
        "model_id": "m",
        **extra,
    }
    return build_config({"targets": [spec]}, "t.toml").targets[0]


async def test_rate_limiter_spaces_requests_beyond_the_burst() -> None:
    limiter = RateLimiter(per_minute=600)  # 10/s, burst of 10
    started = time.monotonic()
    for _ in range(15):
        await limiter.acquire()
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0  # five beyond the burst at 0.1 s each


async def test_retry_after_pauses_the_whole_cell_and_is_capped() -> None:
    now = [100.0]
    async with CellPool() as pool:
        cell = await pool.get(target())
        cell.clock = lambda: now[0]
        cell.pause(7.0)
        assert cell.paused_until == 107.0
        cell.pause(None)
        cell.pause(3.0)  # a shorter retry-after never shortens a pause already in force
        assert cell.paused_until == 107.0
        cell.pause(10_000)
        assert cell.paused_until == 100.0 + MAX_RETRY_AFTER_S


async def test_cells_share_one_client_and_limiter_per_cell_name() -> None:
    async with CellPool() as pool:
        t = target(concurrency=3, requests_per_minute=60)
        a, b = await pool.get(t), await pool.get(t)
        assert a is b and isinstance(a, Cell)
        assert a.concurrency.total_tokens == 3 and a.rate is not None
    assert a.client.is_closed


def test_session_keys_are_stable_and_spread_over_the_configured_number() -> None:
    t = target(sessions=3)
    keys = [t.session_key(i) for i in range(9)]
    assert len(set(keys)) == 3 and keys[0] == keys[3] == "canary:m/p/q:0"
    assert target().session_key(5) is None


async def test_pause_delays_the_next_slot() -> None:
    async with CellPool() as pool:
        cell = await pool.get(target())
        cell.pause(0.3)
        started = time.monotonic()
        await cell.slot()
        assert time.monotonic() - started >= 0.25
        with anyio.fail_after(0.2):
            await cell.slot()  # the pause is over
