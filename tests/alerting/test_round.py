"""One detection round (detect -> alerts -> dispatch), the one ``canary detect`` and the service run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.outbox import OutboxDispatcher
from canary.alerting.round import detection_round
from canary.config.loader import build_config
from tests.alerting.kit import running_sink
from tests.seeding import add_cells, add_passes, add_probes

pytestmark = pytest.mark.anyio


async def seed_one_hot_cell(engine: AsyncEngine, now: datetime) -> None:
    async with engine.begin() as conn:
        ids = await add_cells(conn, ["m/p1/a", "m/p1/b"])
        probes = await add_probes(conn, 10)
        rng = np.random.default_rng(5)
        start, step = now - timedelta(hours=12), timedelta(minutes=5)
        await add_passes(conn, ids["m/p1/a"], probes, start, now, step, {"code_syntax": 0.01}, rng)
        hot = {"code_syntax": lambda t: 0.3 if t > now - timedelta(minutes=30) else 0.01}
        await add_passes(conn, ids["m/p1/b"], probes, start, now, step, hot, rng)


async def test_a_round_finds_fires_and_sends_and_the_next_one_stays_quiet(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await seed_one_hot_cell(engine, now)
    with running_sink() as sink:
        receiver = {"name": "ops", "kind": "webhook", "url": sink.url}
        config = build_config(
            {"detection": {"baseline_s": 43200}, "alerts": {"for_s": 0, "receivers": [receiver]}},
            "canary.toml",
        )
        dispatcher = OutboxDispatcher.from_spec(
            config.alerts, config.path, receivers=config.receivers, rng=random.Random(0)
        )
        first = await detection_round(engine, config.detection, config.alerts, dispatcher, now)
        assert [(f.cell, f.metric) for f in first.findings] == [("m/p1/b", "code_syntax")]
        assert [(c.cell, c.state, c.event) for c in first.changes] == [("m/p1/b", "firing", "firing")]
        assert first.attempted == 1 and [a["status"] for a in sink.accepted] == ["firing"]
        later = now + timedelta(minutes=1)
        second = await detection_round(engine, config.detection, config.alerts, None, later)
        assert [(c.state, c.event) for c in second.changes] == [("firing", None)]  # updated, not re-sent
        assert second.attempted == 0 and len(sink.requests) == 1
