"""The alert outbox dispatcher: claims due deliveries, sends them, records every attempt.

Deliveries are rows of ``alert_deliveries`` committed in the same transaction as the alert change
that caused them (:func:`canary.alerting.incidents.evaluate_alerts`), so a canary that dies after the commit
still sends them once it (or any other replica) runs :meth:`OutboxDispatcher.dispatch_once` again.

Delivery is at least once. A claim leases a row for ``lease_s`` and no HTTP call is made inside a
database transaction; a dispatcher killed mid-send leaves the lease to expire and the next one
sends again. Receivers deduplicate by fingerprint (PagerDuty's ``dedup_key``, Alertmanager's
``fingerprint``); canary itself never creates two deliveries for one alert event and receiver.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from canary.alerting.receivers import build_receivers
from canary.alerting.receivers.base import DeliveryResult, Receiver
from canary.config.receivers import ResolvedReceiver, resolve_receivers
from canary.config.sections import AlertsSpec, DeliveryPolicy
from canary.storage.tables import AlertDeliveryRow as D
from canary.storage.tables import DeliveryAttemptRow

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, with equal jitter.

    Half the capped exponential delay is fixed and half is random, so a receiver that is down is
    never retried faster than half the schedule, yet several replicas do not retry in lockstep.
    """
    base = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** max(0, attempt - 1))
    return base / 2.0 + rng.uniform(0.0, base / 2.0)


@dataclass(frozen=True)
class Claimed:
    id: int
    receiver: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class OutboxDispatcher:
    """Sends outbox rows to the configured receivers; safe to run in several processes at once.

    Built from a validated ``[alerts]`` section with :meth:`from_spec`, or from receiver
    instances and a :class:`~canary.config.sections.DeliveryPolicy` directly.
    """

    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        policy: DeliveryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.receivers = dict(receivers)
        self.policy = policy or DeliveryPolicy()
        self.rng = rng or random.Random()
        self.client = client

    @classmethod
    def from_spec(
        cls,
        spec: AlertsSpec,
        path: Path | str = "canary.toml",
        *,
        receivers: Sequence[ResolvedReceiver] | None = None,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> OutboxDispatcher:
        """The dispatcher of an ``[alerts]`` section, with its delivery policy.

        ``receivers`` are the section's receivers with their secrets resolved at load
        (:attr:`canary.config.loader.Config.receivers`); without them they are resolved now,
        and an unset variable is a :class:`~canary.errors.SecretError` naming ``path``.
        """
        if receivers is None:
            receivers = resolve_receivers(spec.receivers, path)
        return cls(build_receivers(receivers), spec.policy(), rng=rng, client=client)

    async def dispatch_once(self, engine: AsyncEngine, now: datetime) -> int:
        """One round; returns how many deliveries were attempted.

        1. Give up on due rows older than ``max_age_s`` (nobody needs a day-old page).
        2. Claim up to ``batch_size`` due rows with ``FOR UPDATE SKIP LOCKED``, skipping any row
           whose alert has an older pending row for the same receiver (firing goes before
           resolved), and lease them by moving ``next_attempt_at`` forward; commit.
        3. Send the claimed rows concurrently, outside any transaction.
        4. Record each attempt and the row's new status in its own transaction, at the moment
           its answer came: ``now`` plus the time since the round began (a slow receiver or a
           long batch must not date a delivery back to its claim).
        """
        began = time.monotonic()
        claimed = await self._claim(engine, now)
        if not claimed:
            return 0
        results: dict[int, DeliveryResult] = {}
        answered: dict[int, float] = {}  # delivery id -> monotonic time its answer came
        client = self.client or httpx.AsyncClient()
        try:
            async with anyio.create_task_group() as tg:
                for c in claimed:
                    tg.start_soon(self._send, c, client, results, answered)
        finally:
            if self.client is None:
                await client.aclose()
        for c in claimed:
            at = now + timedelta(seconds=answered[c.id] - began)
            await self._record(engine, c, results[c.id], at)
        return len(claimed)

    async def _claim(self, engine: AsyncEngine, now: datetime) -> list[Claimed]:
        p = self.policy
        older = aliased(D)
        earlier_pending = sa.exists().where(
            older.alert_id == D.alert_id,
            older.receiver == D.receiver,
            older.status == "pending",
            older.id < D.id,
        )
        due = sa.select(D.id).where(D.status == "pending", D.next_attempt_at <= now)
        async with engine.begin() as conn:
            stale = due.where(D.created_at < now - timedelta(seconds=p.max_age_s)).with_for_update(
                skip_locked=True
            )
            await conn.execute(
                sa.update(D)
                .where(D.id.in_(stale.scalar_subquery()))
                .values(
                    status="gave_up", last_error=sa.func.coalesce(D.last_error, "") + " (gave up: too old)"
                )
            )
            ids = (
                await conn.execute(
                    due.where(~earlier_pending)
                    .order_by(D.next_attempt_at, D.id)
                    .limit(p.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).scalars().all()  # fmt: skip
            if not ids:
                return []
            rows = await conn.execute(
                sa.update(D)
                .where(D.id.in_(ids))
                .values(next_attempt_at=now + timedelta(seconds=p.lease_s), attempts=D.attempts + 1)
                .returning(D.id, D.receiver, D.payload, D.attempts, D.created_at)
            )
            return sorted((Claimed(*r) for r in rows.all()), key=lambda c: c.id)

    async def _send(
        self,
        c: Claimed,
        client: httpx.AsyncClient,
        out: dict[int, DeliveryResult],
        answered: dict[int, float],
    ) -> None:
        receiver = self.receivers.get(c.receiver)
        if receiver is None:  # removed from the config since the alert fired: retrying cannot help
            out[c.id] = DeliveryResult(False, None, f"receiver '{c.receiver}' is not configured", True)
        else:
            out[c.id] = await receiver.send(c.payload, client)
        answered[c.id] = time.monotonic()

    async def _record(self, engine: AsyncEngine, c: Claimed, r: DeliveryResult, now: datetime) -> None:
        """Store the attempt and move the row on: delivered, failed (permanent), retry, or gave up.

        ``now`` is when the attempt's answer came (or it failed)."""
        values: dict[str, Any] = {"last_error": r.error}
        if r.ok:
            values |= {"status": "delivered", "delivered_at": now}
        elif r.permanent:
            values["status"] = "failed"
        else:
            retry_at = now + timedelta(seconds=backoff_delay(c.attempts, self.policy, self.rng))
            if retry_at - c.created_at > timedelta(seconds=self.policy.max_age_s):
                values["status"] = "gave_up"
            else:
                values["next_attempt_at"] = retry_at
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(DeliveryAttemptRow).values(
                    delivery_id=c.id, at=now, ok=r.ok, http_status=r.http_status, error=r.error,
                    duration_ms=r.duration_ms,
                )
            )  # fmt: skip
            # Conditional on our claim: if the lease ran out and another dispatcher re-claimed
            # the row, its outcome is the one that counts.
            await conn.execute(
                sa.update(D)
                .where(D.id == c.id, D.status == "pending", D.attempts == c.attempts)
                .values(**values)
            )
        level = logging.INFO if r.ok else logging.WARNING
        log.log(level, "delivery %s to %s: %s", c.id, c.receiver, "ok" if r.ok else r.error)

    async def run(self, engine: AsyncEngine, stop_event: anyio.Event) -> None:
        """Dispatch until ``stop_event`` is set; poll every ``poll_s`` while there is nothing to send."""
        while not stop_event.is_set():
            try:
                sent = await self.dispatch_once(engine, datetime.now(UTC))
            except (sa.exc.SQLAlchemyError, OSError):
                # A database restart must not end alert delivery for the life of the process.
                log.exception("alert dispatch round failed; retrying")
                sent = 0
            if not sent:
                with anyio.move_on_after(self.policy.poll_s):
                    await stop_event.wait()
