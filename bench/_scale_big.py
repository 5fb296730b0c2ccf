"""Part 2 of ``bench/scale.py``: detection and retention over a large stored history.

``--big-runs`` runs over 1,000 cells (3 probes, 3 scores each) are generated with
``generate_series`` one day at a time (a pass every 6 minutes), secondary indexes built after,
and the observations backfilled by a first detection round: once, in a PostgreSQL kept under
``--big-data`` (10 M runs take tens of minutes to build on two cores). Every run then extends the
history minute by minute as the service would, timing the rounds (see :func:`big_history`).
Token logprobs' size is measured on one realistic answer (64 tokens, 5 alternatives each) as
JSONB and as stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench._scale_db import SIZE, drop, new_database, scalar
from canary.config.sections import DetectionSpec, StorageSpec
from canary.detection.detect import detect
from canary.storage import logprobs
from canary.storage.engine import (
    async_engine,
    ensure_database,
    migrate,
    sqlalchemy_url,
    start_embedded,
    with_database,
)
from canary.storage.partitions import day_partitions, drop_expired, ensure_partitions

BIG_CELLS, BIG_PROBES, BIG_METRICS, BIG_STEP_S = (
    1000,
    3,
    ("answered", "unexpected_script", "known_answer"),
    360,
)
BIG_DAYS_AHEAD = 3  # partitions past the history's end: later runs of the bench extend it

# A run of cell t in pass g starts at start + g * step + (t % step) seconds; ``:lo``/``:hi``
# keep the runs of [lo, hi) only, so a history is generated, or extended, by the same rows.
BIG_RUNS = """
INSERT INTO runs (pass_id, target_id, probe_pk, started_at, status, latency_ms, served_pool, output_text)
SELECT * FROM (
    SELECT md5(t.id || ':' || g)::uuid, t.id, p.id,
           CAST(:start AS timestamptz) + make_interval(secs => g * :step + t.id % :step) AS started_at,
           CASE WHEN (t.id + g) % 97 = 0 THEN 'error' ELSE 'ok' END, 20 + (g % 7), 'pool',
           'The capital of France is Paris.'
    FROM generate_series(:g0, :g1 - 1) g CROSS JOIN targets t CROSS JOIN probes p
    ORDER BY g, t.id, p.id
) r
WHERE started_at >= :lo AND started_at < :hi
"""
BIG_SCORES = """
INSERT INTO scores (run_id, target_id, probe_pk, metric, passed, created_at)
SELECT r.id, r.target_id, r.probe_pk, m, random() > 0.02, r.started_at
FROM runs r CROSS JOIN unnest(CAST(:metrics AS text[])) m
WHERE r.started_at >= :lo AND r.started_at < :hi AND r.status = 'ok'
ORDER BY r.id
"""
# What the bench knows of the stored history, kept in its own database for the next run.
HISTORY = """
CREATE TABLE IF NOT EXISTS bench_history (
    runs BIGINT, scores BIGINT, start_at TIMESTAMPTZ, stored_until TIMESTAMPTZ,
    generate_s FLOAT, backfill_s FLOAT
)
"""
SECONDARY_INDEXES = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('runs', 'scores')"
    " AND indexname NOT LIKE 'pk_%'"
)


@dataclass
class History:
    """The stored history: its first pass's start, how far it is stored, and how it was made."""

    runs: int
    scores: int
    start_at: datetime
    stored_until: datetime
    generate_s: float
    backfill_s: float


def append(conn: sa.Connection, start: datetime, lo: datetime, hi: datetime) -> None:
    """Store the runs (and scores) of the history that start in ``[lo, hi)``."""
    g0 = max(0, int((lo - start).total_seconds() // BIG_STEP_S) - 1)
    g1 = int((hi - start).total_seconds() // BIG_STEP_S) + 1
    conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
    times = {"lo": lo, "hi": hi}
    conn.execute(sa.text(BIG_RUNS), {"start": start, "step": BIG_STEP_S, "g0": g0, "g1": g1, **times})
    conn.execute(sa.text(BIG_SCORES), {"metrics": list(BIG_METRICS), **times})


def generate_big(url: str, runs: int, end: datetime) -> tuple[datetime, float]:
    """``runs`` runs (three scores per answered run) ending at ``end``: returns the first pass's
    start and the seconds taken. The secondary indexes are built once, after the rows are in."""
    passes = max(1, runs // (BIG_CELLS * BIG_PROBES))
    start = end - timedelta(seconds=passes * BIG_STEP_S)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO targets (cell, model, platform, pool, provider, base_url, model_id)"
                " SELECT 'm' || (i % 10) || '/p' || (i % 4) || '/pool' || i, 'm' || (i % 10), 'p' || (i % 4),"
                " 'pool' || i, 'openai-chat', 'http://127.0.0.1:9', 'm' FROM generate_series(1, :n) i"
            ),
            {"n": BIG_CELLS},
        )
        conn.execute(
            sa.text(
                "INSERT INTO probes (probe_id, probe_set, version, content_hash, spec)"
                " SELECT 'p' || i, 'basic', 1, 'h' || i, '{}' FROM generate_series(1, :n) i"
            ),
            {"n": BIG_PROBES},
        )
        indexes = conn.execute(sa.text(SECONDARY_INDEXES)).all()
        for name, _ in indexes:
            conn.execute(sa.text(f"DROP INDEX {name}"))
    lo = start
    while lo < end:
        hi = min(lo + timedelta(days=1), end)
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
            append(conn, start, lo, hi)
        lo = hi
        print(f"  generated up to {lo:%Y-%m-%d %H:%M} ({time.perf_counter() - started:.0f} s)", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        for _, definition in indexes:
            # pg_indexes gives a partitioned table's index "ON ONLY" the parent: built so, it would
            # stay invalid with no index on any partition.
            conn.execute(sa.text(definition.replace(" ON ONLY ", " ON ", 1)))
        conn.execute(sa.text("VACUUM ANALYZE runs"))
        conn.execute(sa.text("VACUUM ANALYZE scores"))
    engine.dispose()
    return start, time.perf_counter() - started


def stored_counts(url: str) -> tuple[int, int]:
    return int(scalar(url, "SELECT count(*) FROM runs")), int(scalar(url, "SELECT count(*) FROM scores"))


def stored_history(url: str) -> History | None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(HISTORY))
            row = conn.execute(sa.text("SELECT * FROM bench_history")).first()
    finally:
        engine.dispose()
    return History(*row) if row is not None else None


def save_history(url: str, h: History) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(HISTORY))
        conn.execute(sa.text("DELETE FROM bench_history"))
        conn.execute(
            sa.text("INSERT INTO bench_history VALUES (:runs, :scores, :start, :until, :gen, :backfill)"),
            {"runs": h.runs, "scores": h.scores, "start": h.start_at, "until": h.stored_until,
             "gen": h.generate_s, "backfill": h.backfill_s},
        )  # fmt: skip
    engine.dispose()


async def round_s(engine: AsyncEngine, at: datetime) -> tuple[float, dict[str, float]]:
    """One detection round at ``at`` on the service's engine: seconds and its phases."""
    phases: dict[str, float] = {}
    started = time.perf_counter()
    await detect(engine, DetectionSpec(), at, phases=phases)
    return time.perf_counter() - started, {k: round(v, 3) for k, v in phases.items()}


def history(server_url: str, runs: int) -> tuple[str, History]:
    """The database of ``runs`` runs, generated (and its observations backfilled) unless stored."""
    name = f"scale_big_{runs}"
    ensure_database(server_url, name)
    url = sqlalchemy_url(with_database(server_url, name))
    migrate(url)  # a stored history moves to the newest schema like any database
    found = stored_history(url)
    if found is not None:
        print(f"reusing the stored history ({found.runs:,} runs, up to {found.stored_until:%Y-%m-%d %H:%M})")
        return url, found
    drop(server_url, name)
    url = new_database(server_url, name)
    # The history ends 4 minutes before an hour, so the rounds below cross one.
    end = datetime.now(UTC).replace(minute=56, second=0, microsecond=0)
    passes = max(1, runs // (BIG_CELLS * BIG_PROBES))

    async def partitions() -> None:
        engine = async_engine(url)
        async with engine.begin() as conn:
            first = (end - timedelta(seconds=passes * BIG_STEP_S)).date()
            await ensure_partitions(conn, first, end.date() + timedelta(days=BIG_DAYS_AHEAD))
        await engine.dispose()

    asyncio.run(partitions())
    start, gen_s = generate_big(url, runs, end)
    n_runs, n_scores = (
        int(scalar(url, "SELECT count(*) FROM runs")),
        int(scalar(url, "SELECT count(*) FROM scores")),
    )
    print(f"stored {n_runs:,} runs and {n_scores:,} scores in {gen_s:.0f} s")

    async def backfill() -> float:
        engine = async_engine(url)
        try:
            return (await round_s(engine, end))[0]
        finally:
            await engine.dispose()

    found = History(n_runs, n_scores, start, end, gen_s, asyncio.run(backfill()))
    save_history(url, found)
    return url, found


def big_history(runs: int, data_dir: Path) -> dict[str, Any]:
    """Part 2: detection rounds and a day's drop over a large stored history (kept in ``data_dir``).

    1. The history (generated once, then reused): ``runs`` runs ending at some hour's :56.
    2. The process's first round, at the next :56 (after storing the runs up to it, if a previous
       run moved the history on): it reads the whole look-back, which later rounds keep.
    3. Three rounds a minute apart, each after storing that minute's runs: the steady rounds,
       then one 30 s into the next hour (its baseline hours are read afresh).
    4. Dropping the oldest day's partitions, timed in a transaction that is rolled back, so the
       history stays whole for the next run.
    """
    server_url, server = start_embedded(data_dir / "pg")
    try:
        url, h = history(server_url, runs)
        steady: list[float] = []
        phases: list[dict[str, float]] = []
        new_hour_s = first_s = 0.0

        async def rounds() -> None:
            nonlocal new_hour_s, first_s
            sync = sa.create_engine(url)
            engine = async_engine(url)
            try:
                # The process's first round reads the whole look-back and the baseline's hours (what
                # later rounds keep), after catching up to the next :56 if an earlier run moved on.
                target = h.stored_until.replace(minute=56, second=0, microsecond=0)
                target += timedelta(hours=1) if target < h.stored_until else timedelta()
                times = [("first", target)]
                times += [("steady", target + timedelta(minutes=k)) for k in (1, 2, 3)]
                times.append(("new hour", (target + timedelta(hours=1)).replace(minute=0, second=30)))
                for kind, at in times:
                    with sync.begin() as conn:
                        append(conn, h.start_at, h.stored_until, at)
                    h.stored_until = at
                    seconds, took = await round_s(engine, at)
                    if kind == "first":
                        first_s = seconds
                    elif kind == "steady":
                        steady.append(seconds)
                        phases.append(took)
                    elif kind == "new hour":
                        new_hour_s = seconds
                    print(f"  {kind} round at {at:%H:%M:%S}: {seconds:.3f} s {took}", flush=True)
            finally:
                await engine.dispose()
                sync.dispose()

        asyncio.run(rounds())
        h.runs, h.scores = stored_counts(url)
        save_history(url, h)
        total_bytes = float(scalar(url, SIZE) or 0)
        drop_s, dropped = asyncio.run(drop_oldest_day(url))
    finally:
        server.cleanup()  # type: ignore[attr-defined]
    fastest = min(range(len(steady)), key=steady.__getitem__)
    return {
        "big_runs": h.runs,
        "big_scores": h.scores,
        "generate_s": round(h.generate_s, 1),
        "detection_first_round_s": round(h.backfill_s, 3),
        "detection_round_s_10m": round(steady[fastest], 3),
        "detection_rounds_s": [round(s, 3) for s in steady],
        "detection_round_phases_s": phases[fastest],
        "detection_round_new_hour_s": round(new_hour_s, 3),
        "detection_round_first_s": round(first_s, 3),
        "big_bytes_per_run": round(total_bytes / max(h.runs, 1), 1),
        "partition_drop_s": round(drop_s, 4),
        "partitions_dropped": dropped,
        "retention": StorageSpec().raw_retention_days,
    }


async def drop_oldest_day(url: str) -> tuple[float, list[str]]:
    """Seconds to drop the oldest day's partitions (then rolled back) and their names."""
    engine = async_engine(url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            oldest = min(await day_partitions(conn, "runs"))
            started = time.perf_counter()
            dropped = await drop_expired(conn, oldest + timedelta(days=1))
            seconds = time.perf_counter() - started
            await transaction.rollback()
            return seconds, dropped
    finally:
        await engine.dispose()


def logprob_sizes(url: str) -> tuple[int, int]:
    """One answer's logprobs (64 tokens, 5 alternatives) as JSONB and as stored."""
    rows = [
        [f" tok{i}", -0.0123 * i, [[f" alt{i}_{k}", -1.5 * k - 0.01 * i] for k in range(5)]]
        for i in range(64)
    ]
    stored = logprobs.encode(rows)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        as_jsonb = int(
            conn.scalar(sa.text("SELECT pg_column_size(CAST(:j AS jsonb))"), {"j": json.dumps(rows)})
        )
        as_stored = int(conn.scalar(sa.text("SELECT pg_column_size(CAST(:b AS bytea))"), {"b": stored}))
    engine.dispose()
    return as_jsonb, as_stored


def print_big(big: dict[str, Any]) -> None:
    print(
        f"{big['big_runs']:,} runs, {big['big_scores']:,} scores: first detection round (backfills the"
        f" observations) {big['detection_first_round_s']:.1f} s, then {big['detection_rounds_s']} s"
        f" per round (the process's first {big['detection_round_first_s']:.2f} s, the first of an hour"
        f" {big['detection_round_new_hour_s']:.2f} s; phases of the"
        f" fastest {big['detection_round_phases_s']})"
        f" over {BIG_CELLS} cells; {big['big_bytes_per_run']:.0f} B/run; dropping the oldest day"
        f" ({len(big['partitions_dropped'])} partitions) {big['partition_drop_s'] * 1000:.1f} ms"
    )
