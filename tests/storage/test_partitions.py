"""Partitioned runs and scores: migration 0007 keeps every row, partitions come and go by day,
retention drops whole days and trims the rollups, and logprobs are stored compressed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.sections import StorageSpec
from canary.probing.completion import Completion, TokenLogprob
from canary.storage import logprobs
from canary.storage.engine import async_engine, migrate
from canary.storage.partitions import day_partitions, maintain, partition_name
from canary.storage.writes import RunResult, write_results
from tests.conftest import database_at
from tests.seeding import add_cells, add_probes, seed_cells

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC).replace(microsecond=0)
RUN_CONTENT = (
    "SELECT id, pass_id, target_id, probe_pk, started_at, status, output_text, session_key,"
    " convert_from(token_logprobs, 'UTF8')::jsonb AS logprobs FROM runs ORDER BY id"
)
OLD_RUN_CONTENT = RUN_CONTENT.replace("convert_from(token_logprobs, 'UTF8')::jsonb", "token_logprobs")
SCORE_CONTENT = "SELECT id, run_id, target_id, probe_pk, metric, passed, created_at FROM scores ORDER BY id"


@pytest.fixture
def db_at_0006(pg_server: str) -> Iterator[str]:
    yield from database_at(pg_server, "0006")


async def seed(engine: AsyncEngine, start: datetime, end: datetime) -> None:
    rng = np.random.default_rng(7)
    async with engine.begin() as conn:
        rates = {"answered": 0.2, "unexpected_script": 0.1}
        await seed_cells(conn, ["m/p/a", "m/p/b"], 2, start, end, timedelta(hours=2), rates, rng)


async def test_migration_0007_moves_every_run_and_score_into_day_partitions(db_at_0006: str) -> None:
    engine = async_engine(db_at_0006)
    try:
        # Ten days back to one day ahead, and one run far older than the partitions made for it.
        await seed(engine, NOW - timedelta(days=10), NOW + timedelta(days=1))
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE runs SET token_logprobs = CAST(:lp AS jsonb)"
                    " WHERE id = (SELECT min(id) FROM runs)"
                ),
                {"lp": json.dumps([["Par", -0.01, [["Par", -0.01], ["Lon", -4.5]]], ["is", -0.2, []]])},
            )
            await conn.execute(
                sa.text("UPDATE runs SET started_at = started_at - interval '400 days' WHERE id = 2")
            )
            await conn.execute(
                sa.text("UPDATE scores SET created_at = created_at - interval '400 days' WHERE run_id = 2")
            )
            runs_before = (await conn.execute(sa.text(OLD_RUN_CONTENT))).all()
            scores_before = (await conn.execute(sa.text(SCORE_CONTENT))).all()
        migrate(db_at_0006)
        async with engine.begin() as conn:
            runs_after = (await conn.execute(sa.text(RUN_CONTENT))).all()
            scores_after = (await conn.execute(sa.text(SCORE_CONTENT))).all()
            days = await day_partitions(conn, "runs")
            stray = await conn.scalar(sa.text("SELECT count(*) FROM runs_default"))
            stored = await conn.scalar(sa.text("SELECT token_logprobs FROM runs WHERE id = 1"))
            # New rows continue the old ids.
            next_id = await conn.scalar(
                sa.text(
                    "INSERT INTO runs (pass_id, target_id, probe_pk, started_at, status, latency_ms)"
                    " SELECT pass_id, target_id, probe_pk, now(), 'ok', 1 FROM runs LIMIT 1 RETURNING id"
                )
            )
        assert len(runs_after) == len(runs_before) > 100 and len(scores_after) == len(scores_before)
        assert runs_after == runs_before and scores_after == scores_before
        assert logprobs.decode(stored) == runs_before[0].logprobs
        # Days back to the oldest row, at most 60 (the 400-day-old run is in the default partition).
        assert (
            min(days) == (NOW - timedelta(days=60)).date() and max(days) >= (NOW + timedelta(days=3)).date()
        )
        assert stray == 1  # the 400-day-old run
        assert next_id == max(r.id for r in runs_before) + 1
    finally:
        await engine.dispose()


async def test_maintenance_creates_days_ahead_moves_strays_and_drops_expired_days(
    engine: AsyncEngine,
) -> None:
    spec = StorageSpec(raw_retention_days=14, rollup_retention_days=30, partitions_ahead_days=2)
    later = NOW + timedelta(days=30)  # a month on: nothing of these days has a partition yet
    # Rows land in the default partition until their day is created; a stray of tomorrow moves.
    await seed(engine, later - timedelta(days=20), later + timedelta(days=1, hours=6))
    async with engine.begin() as conn:
        for grain, age in (("minute", 15), ("minute", 13), ("hour", 31), ("hour", 29)):
            await conn.execute(
                sa.text(f"INSERT INTO score_rollup_{grain} VALUES (1, 'answered', :t, 1, 0)"),
                {"t": later - timedelta(days=age)},
            )
        total = await conn.scalar(sa.text("SELECT count(*) FROM runs"))
    done = await maintain(engine, spec, later)
    tomorrow = (later + timedelta(days=1)).date()
    assert (
        partition_name("runs", tomorrow) in done.created
        and partition_name("scores", tomorrow) in done.created
    )
    assert done.rollup_rows_deleted == 2
    async with engine.begin() as conn:
        days = await day_partitions(conn, "runs")
        assert sorted(days) == [later.date() + timedelta(days=i) for i in range(3)]
        in_tomorrow = await conn.scalar(sa.text(f"SELECT count(*) FROM {partition_name('runs', tomorrow)}"))
        kept = await conn.scalar(sa.text("SELECT count(*) FROM runs"))
        oldest = await conn.scalar(sa.text("SELECT min(started_at) FROM runs"))
        scores_oldest = await conn.scalar(sa.text("SELECT min(created_at) FROM scores"))
    assert in_tomorrow and in_tomorrow > 0
    cutoff = datetime.combine((later - timedelta(days=14)).date(), datetime.min.time(), UTC)
    assert 0 < kept < total and oldest >= cutoff and scores_oldest >= cutoff
    # Twenty days on, the days made ahead have expired in their turn and are dropped whole.
    again = await maintain(engine, spec, later + timedelta(days=20))
    assert set(again.dropped) >= {partition_name(t, tomorrow) for t in ("runs", "scores")}


async def test_logprobs_are_stored_compressed_and_read_back(engine: AsyncEngine) -> None:
    tokens = [TokenLogprob(f"tok{i}", -0.01 * i, ((f"tok{i}", -0.01 * i), ("alt", -3.0))) for i in range(200)]
    completion = Completion(ok=True, text="x" * 50, latency_s=0.1, tokens=tokens)
    async with engine.begin() as conn:
        cells = await add_cells(conn, ["m/p/a"])
        (probe,) = await add_probes(conn, 1)
        result = RunResult(uuid.uuid4(), cells["m/p/a"], probe, NOW, completion)
        (run_id,) = await write_results(conn, [result])
        stored, size = (
            await conn.execute(
                sa.text("SELECT token_logprobs, pg_column_size(token_logprobs) FROM runs WHERE id = :i"),
                {"i": run_id},
            )
        ).one()
        as_jsonb = await conn.scalar(
            sa.text("SELECT pg_column_size(CAST(:j AS jsonb))"), {"j": json.dumps(logprobs.decode(stored))}
        )
    assert logprobs.decode(stored) == [[t.token, t.logprob, [list(a) for a in t.top]] for t in tokens]
    assert size * 3 < as_jsonb
