"""A ``retry-after`` holds back every request of the cell queued behind the 429, within a pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import load_config
from canary.probing.catalog import load_catalog
from canary.probing.runner import run_pass
from tests.faults.misbehaving import RateLimitOnceUpstream
from tests.loopback import serve_in_thread

pytestmark = pytest.mark.anyio

PROBES = '[defaults]\nscorers = ["answered"]\n' + "".join(
    f'\n[[probe]]\nid = "p{i}"\nprompt = "Question {i}?"\nreference_answer = "Paris"\n' for i in range(5)
)


async def test_requests_queued_behind_a_429_wait_for_its_retry_after(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    upstream = RateLimitOnceUpstream(retry_after_s=1)
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "five.toml").write_text(PROBES)
    with serve_in_thread(upstream) as server:
        (tmp_path / "canary.toml").write_text(
            'probes_dir = "probes"\n[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a"\n'
            f'provider = "openai-chat"\nbase_url = "{server.url}/v1"\nmodel_id = "ok"\n'
            "concurrency = 1\ntimeout_s = 5\n"
        )
        config = load_config(tmp_path / "canary.toml")
        summary = await run_pass(engine, config.targets, load_catalog(tmp_path / "probes").probes)
    assert summary.cells["m/p/a"].failures == {"rate_limited": 1}
    assert len(upstream.arrivals) == 5 and upstream.limited_at is not None
    # Before the fix the other four arrived within 0.15 s of the 429.
    gaps = [t - upstream.limited_at for t in upstream.arrivals[1:]]
    assert min(gaps) >= 0.9, gaps
