"""The status page's seeded state at a fixed clock (3:07 a.m.), for the page and browser tests.

dashkit's cells, alerts, samples and deploys, seeded at :data:`NOW`, plus an outbox with one
notification still being retried and one given up, so every section of the page has something.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from dashkit import FIRING, Seeded, seed
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage.tables import AlertDeliveryRow, AlertRow

NOW = datetime(2026, 11, 30, 3, 7, tzinfo=UTC)
RETRYING_ERROR = "HTTP 503 from hooks.example.test"


async def seed_status(engine: AsyncEngine) -> Seeded:
    seeded = await seed(engine, NOW)
    async with engine.begin() as conn:
        alert_id = await conn.scalar(
            sa.select(AlertRow.id).where(AlertRow.target_id == seeded.ids[FIRING], AlertRow.state == "firing")
        )
        common = {"alert_id": alert_id, "event": "firing", "payload": {}, "next_attempt_at": NOW}
        await conn.execute(
            sa.insert(AlertDeliveryRow),
            [
                {**common, "receiver": "pager", "status": "pending", "attempts": 4,
                 "last_error": RETRYING_ERROR, "created_at": NOW - timedelta(minutes=12),
                 "delivered_at": None},
                {**common, "receiver": "chat", "status": "gave_up", "attempts": 9,
                 "last_error": "HTTP 500 (gave up: too old)", "created_at": NOW - timedelta(hours=3),
                 "delivered_at": None},
                {**common, "receiver": "chat", "status": "delivered", "attempts": 1, "last_error": None,
                 "created_at": NOW - timedelta(minutes=20), "delivered_at": NOW - timedelta(minutes=20)},
            ],
        )  # fmt: skip
    return seeded
