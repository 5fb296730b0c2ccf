"""Part 2 of ``bench/scale.py``: detection and retention over a large stored history.

On a fresh database, ``--big-runs`` runs over 1,000 cells (3 probes, 3 scores each) are generated
with ``generate_series`` one day at a time (a pass every 6 minutes), then: the first detection
round (which backfills the observation counts), steady rounds (the ``<= 1 s`` figure), and
dropping the oldest day's partitions. Token logprobs' size is measured on one realistic answer
(64 tokens, 5 alternatives each) as JSONB and as stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench._scale_db import SIZE, detection_rounds_s, drop, new_database, scalar
from canary.config.sections import StorageSpec
from canary.storage import logprobs
from canary.storage.engine import async_engine
from canary.storage.partitions import ensure_partitions

BIG_CELLS, BIG_PROBES, BIG_METRICS, BIG_STEP_S = (
    1000,
    3,
    ("answered", "unexpected_script", "known_answer"),
    360,
)

BIG_RUNS = """
INSERT INTO runs (pass_id, target_id, probe_pk, started_at, status, latency_ms, served_pool, output_text)
SELECT md5(t.id || ':' || g)::uuid, t.id, p.id, :start + make_interval(secs => g * :step + t.id % :step),
       CASE WHEN (t.id + g) % 97 = 0 THEN 'error' ELSE 'ok' END, 20 + (g % 7), 'pool',
       'The capital of France is Paris.'
FROM generate_series(:g0, :g1 - 1) g CROSS JOIN targets t CROSS JOIN probes p
ORDER BY g, t.id, p.id
"""
BIG_SCORES = """
INSERT INTO scores (run_id, target_id, probe_pk, metric, passed, created_at)
SELECT r.id, r.target_id, r.probe_pk, m, random() > 0.02, r.started_at
FROM runs r CROSS JOIN unnest(CAST(:metrics AS text[])) m
WHERE r.started_at >= :lo AND r.started_at < :hi AND r.status = 'ok'
ORDER BY r.id
"""


def generate_big(url: str, runs: int, now: datetime) -> tuple[int, int, float]:
    """``runs`` runs (and three scores per answered run) ending at ``now``; returns counts and seconds."""
    passes = max(1, runs // (BIG_CELLS * BIG_PROBES))
    start = now - timedelta(seconds=passes * BIG_STEP_S)
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
    per_day = 86400 // BIG_STEP_S
    g = 0
    while g < passes:
        g1 = min(g + per_day, passes)
        lo, hi = start + timedelta(seconds=g * BIG_STEP_S), start + timedelta(seconds=g1 * BIG_STEP_S)
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
            conn.execute(sa.text(BIG_RUNS), {"start": start, "step": BIG_STEP_S, "g0": g, "g1": g1})
            conn.execute(sa.text(BIG_SCORES), {"metrics": list(BIG_METRICS), "lo": lo, "hi": hi})
        g = g1
        print(f"  generated {g}/{passes} passes ({time.perf_counter() - started:.0f} s)", flush=True)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE runs; ANALYZE scores"))
        n_runs = int(conn.scalar(sa.text("SELECT count(*) FROM runs")) or 0)
        n_scores = int(conn.scalar(sa.text("SELECT count(*) FROM scores")) or 0)
    engine.dispose()
    return n_runs, n_scores, time.perf_counter() - started


def big_history(server_url: str, runs: int) -> dict[str, Any]:
    """Part 2: detection and a day's drop over a large stored history."""
    from canary.storage.partitions import day_partitions, drop_expired

    url = new_database(server_url, "scale_big")
    now = datetime.now(UTC)
    passes = max(1, runs // (BIG_CELLS * BIG_PROBES))
    first_day = (now - timedelta(seconds=passes * BIG_STEP_S)).date()

    async def partitions() -> None:
        engine = async_engine(url)
        async with engine.begin() as conn:
            await ensure_partitions(conn, first_day, now.date() + timedelta(days=1))
        await engine.dispose()

    asyncio.run(partitions())
    n_runs, n_scores, gen_s = generate_big(url, runs, now)
    print(f"stored {n_runs:,} runs and {n_scores:,} scores in {gen_s:.0f} s")
    # Rounds as the service runs them: one engine, a minute apart. The first backfills the
    # observations; the first of an hour reads the baseline's week of hourly totals again.
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=30)
    times = [now, *(now + timedelta(seconds=60 * (i + 1)) for i in range(3)), next_hour]
    backfill_s, *steady, new_hour_s = detection_rounds_s(url, times)
    total_bytes = float(scalar(url, SIZE) or 0)

    async def drop_day() -> tuple[float, list[str]]:
        engine = async_engine(url)
        try:
            async with engine.begin() as conn:
                oldest = min(await day_partitions(conn, "runs"))
                started = time.perf_counter()
                dropped = await drop_expired(conn, oldest + timedelta(days=1))
                return time.perf_counter() - started, dropped
        finally:
            await engine.dispose()

    drop_s, dropped = asyncio.run(drop_day())
    drop(server_url, "scale_big")
    return {
        "big_runs": n_runs,
        "big_scores": n_scores,
        "generate_s": round(gen_s, 1),
        "detection_first_round_s": round(backfill_s, 3),
        "detection_round_s_10m": round(min(steady), 3),
        "detection_rounds_s": [round(s, 3) for s in steady],
        "detection_round_new_hour_s": round(new_hour_s, 3),
        "big_bytes_per_run": round(total_bytes / max(n_runs, 1), 1),
        "partition_drop_s": round(drop_s, 4),
        "partitions_dropped": dropped,
        "retention": StorageSpec().raw_retention_days,
    }


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
        f" per round ({big['detection_round_new_hour_s']:.2f} s for the first of an hour)"
        f" over {BIG_CELLS} cells; {big['big_bytes_per_run']:.0f} B/run; dropping the oldest day"
        f" ({len(big['partitions_dropped'])} partitions) {big['partition_drop_s'] * 1000:.1f} ms"
    )
