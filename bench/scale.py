"""Scale: 1,000-10,000 cells on 1, 2 and 4 replicas of ``canary serve`` sharing one PostgreSQL,
then detection and retention over a large stored history.

Part 1, for each cell count and replica count: real ``canary serve`` processes (``--shard i/N``)
probe a zero-latency loopback upstream (another process); after all are ready and ``--warmup``
seconds more (one interval by default: registration and first passes are start-up, not the
steady state), figures are taken over ``--duration`` seconds; one PostgreSQL (embedded, as
``DATABASE_URL``) stores everything. Printed: scheduler lag p50/p99 (the replicas'
``canary_scheduler_lag_seconds`` histograms summed, over the window only), stored runs/s,
PostgreSQL CPU seconds per stored run (all server processes, user + system), one detection
round over the stored cells, peak RSS per replica, bytes per stored run (runs, scores and
observations with their indexes and TOAST), and each figure's ratio to one replica.

Part 2, on a fresh database: ``--big-runs`` runs over 1,000 cells (3 probes, 3 scores each) are
generated with ``generate_series`` one day at a time (a pass every 6 minutes), then: the first
detection round (which backfills the observation counts), a steady round (the ``<= 1 s`` figure),
and dropping the oldest day's partitions. Token logprobs' size is measured on one realistic
answer (64 tokens, 5 alternatives each) as JSONB and as stored.

    .venv/bin/python bench/scale.py [--cells 1000,5000,10000] [--replicas 1,2,4] [--interval 30]
                                    [--warmup 30] [--duration 30] [--big-runs 10000000]

The defaults are short (30 s of warm-up and 30 s measured per configuration, nine of them) to keep
the whole run near 15 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import canary_command, print_machine  # noqa: E402
from bench.service import (  # noqa: E402
    bound_socket,
    histogram_quantile,
    lag_buckets,
    serve_upstream,
    stored_runs,
    wait_listening,
    wait_ready,
    write_config,
)
from canary.config.sections import DetectionSpec, StorageSpec  # noqa: E402
from canary.storage import logprobs  # noqa: E402
from canary.storage.engine import (  # noqa: E402
    async_engine,
    ensure_database,
    migrate,
    sqlalchemy_url,
    start_embedded,
    with_database,
)
from canary.storage.partitions import ensure_partitions  # noqa: E402

BIG_CELLS, BIG_PROBES, BIG_METRICS, BIG_STEP_S = (
    1000,
    3,
    ("answered", "unexpected_script", "known_answer"),
    360,
)
SIZE = (
    "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i"
    " WHERE i.inhparent IN ('runs'::regclass, 'scores'::regclass, 'observations'::regclass)"
)


def postgres_cpu_s(server_pid: int) -> float:
    """User + system CPU seconds of the PostgreSQL server and all its backends so far."""
    root = psutil.Process(server_pid)
    own = root.cpu_times()
    # Backends that exited count through the postmaster, which reaps them (children_*).
    total = own.children_user + own.children_system
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def new_database(server_url: str, name: str) -> str:
    ensure_database(server_url, name)
    url = sqlalchemy_url(with_database(server_url, name))
    migrate(url)
    return url


def scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text(sql))
    finally:
        engine.dispose()


def detection_round_s(url: str, now: datetime) -> float:
    from canary.detection.detect import detect

    async def once() -> float:
        engine = async_engine(url)
        try:
            started = time.perf_counter()
            await detect(engine, DetectionSpec(), now)
            return time.perf_counter() - started
        finally:
            await engine.dispose()

    return asyncio.run(once())


def detection_rounds_s(url: str, times: list[datetime]) -> list[float]:
    """Seconds of a detection round at each of ``times``, in order, on one engine."""
    from canary.detection.detect import detect

    async def rounds() -> list[float]:
        engine = async_engine(url)
        out = []
        try:
            for at in times:
                started = time.perf_counter()
                await detect(engine, DetectionSpec(), at)
                out.append(time.perf_counter() - started)
            return out
        finally:
            await engine.dispose()

    return asyncio.run(rounds())


def merged_lag(ports: list[int]) -> dict[float, float]:
    """The replicas' scheduler lag histograms summed: cumulative count per bucket bound."""
    merged: dict[float, float] = {}
    for port in ports:
        # A saturated replica answers slowly; give it a minute rather than lose the run.
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
        for le, count in lag_buckets(text):
            merged[le] = merged.get(le, 0.0) + count
    return merged


def run_replicas(
    workdir: Path, server_url: str, pg_pid: int, cells: int, replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One configuration of part 1; returns its figures."""
    name = f"scale_{cells}_{replicas}"
    url = new_database(server_url, name)
    upstream_sock = bound_socket()
    upstream = multiprocessing.get_context("spawn").Process(target=serve_upstream, args=(upstream_sock,))
    upstream.start()
    wait_listening(upstream_sock.getsockname()[1])
    here = workdir / name
    here.mkdir()
    ports = []
    for _ in range(replicas):
        s = bound_socket()
        ports.append(s.getsockname()[1])
        s.close()
    config = write_config(here, cells, args.interval, f"http://127.0.0.1:{upstream_sock.getsockname()[1]}", 0)
    env = {**os.environ, "DATABASE_URL": url}
    procs = [
        subprocess.Popen(
            canary_command(
                "serve", "--config", str(config), "--log-level", "WARNING",
                "--port", str(port), "--shard", f"{i}/{replicas}",
            ),  # fmt: skip
            env=env,
            cwd=here,
        )  # fmt: skip
        for i, port in enumerate(ports)
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", proc)
        # Steady state: the first passes (registration, connections, the start spread) are not
        # measured; counts at the window's start are subtracted from those at its end.
        time.sleep(args.warmup)
        lag0 = merged_lag(ports)
        runs0, cpu0, t0 = stored_runs(url), postgres_cpu_s(pg_pid), time.perf_counter()
        rss = [0.0] * replicas
        while time.perf_counter() - t0 < args.duration:
            time.sleep(1.0)
            for i, proc in enumerate(procs):
                rss[i] = max(rss[i], psutil.Process(proc.pid).memory_info().rss / 2**20)
        elapsed = time.perf_counter() - t0
        runs1, cpu1 = stored_runs(url), postgres_cpu_s(pg_pid)
        merged = {le: count - lag0.get(le, 0.0) for le, count in merged_lag(ports).items()}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=90)
        upstream.terminate()
        upstream.join()
    buckets = sorted(merged.items())
    stored = max(runs1 - runs0, 1)
    detect_s = detection_round_s(url, datetime.now(UTC))
    total_runs = int(scalar(url, "SELECT count(*) FROM runs") or 1)
    figures = {
        "cells": cells,
        "replicas": replicas,
        "lag_p50_s": round(histogram_quantile(0.5, buckets), 4),
        "lag_p99_s": round(histogram_quantile(0.99, buckets), 4),
        "runs_per_s": round((runs1 - runs0) / elapsed, 2),
        "configured_per_s": round(cells / args.interval, 2),
        "warmup_s": args.warmup,
        "measured_s": round(elapsed, 1),
        "db_cpu_ms_per_run": round(1000 * (cpu1 - cpu0) / stored, 3),
        "detection_round_s": round(detect_s, 3),
        "rss_mb_per_replica": round(max(rss), 1),
        "bytes_per_run": round(float(scalar(url, SIZE) or 0) / total_runs, 1),
    }
    drop(server_url, name)
    return figures


def ratio(figure: float, of_one: float) -> float | None:
    """``figure`` over one replica's; None when one replica's is zero (a saturated replica)."""
    return round(figure / of_one, 2) if of_one > 0 else None


def drop(server_url: str, name: str) -> None:
    admin = sa.create_engine(
        sqlalchemy_url(with_database(server_url, "postgres")), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default="1000,5000,10000")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per configuration")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes of one cell")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds run before measuring (steady state, not start-up)"
    )
    parser.add_argument("--big-runs", type=int, default=10_000_000, help="runs stored for part 2 (0: skip)")
    args = parser.parse_args()
    print_machine()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server_url, server = start_embedded(workdir / "pg")
        pg_pid = server_pid(workdir / "pg")
        try:
            jsonb_bytes, stored_bytes = logprob_sizes(new_database(server_url, "scale_sizes"))
            print(f"token logprobs of one 64-token answer: {jsonb_bytes} B as JSONB, {stored_bytes} B stored")
            for cells in (int(c) for c in args.cells.split(",") if c):
                one: dict[str, Any] | None = None
                for replicas in (int(r) for r in args.replicas.split(",")):
                    try:
                        f = run_replicas(workdir, server_url, pg_pid, cells, replicas, args)
                    except Exception as exc:  # one overloaded configuration must not lose the others
                        print(f"{cells:>6} cells x {replicas} replicas: failed: {exc!r}", flush=True)
                        results.append({"cells": cells, "replicas": replicas, "error": repr(exc)})
                        continue
                    one = one or f
                    for key, figure in (("runs_per_s", "runs_per_s"), ("lag_p99", "lag_p99_s"),
                                        ("db_cpu", "db_cpu_ms_per_run")):  # fmt: skip
                        f[f"{key}_ratio"] = ratio(f[figure], one[figure])
                    results.append(f)
                    print(
                        f"{cells:>6} cells x {replicas} replicas: lag p50 {f['lag_p50_s']:.3f} s p99"
                        f" {f['lag_p99_s']:.3f} s, {f['runs_per_s']:.1f} runs/s (configured"
                        f" {f['configured_per_s']:.1f}, x{f['runs_per_s_ratio']} of 1 replica), PostgreSQL"
                        f" {f['db_cpu_ms_per_run']:.2f} ms CPU/run, detection {f['detection_round_s']:.2f} s,"
                        f" RSS {f['rss_mb_per_replica']:.0f} MB/replica, {f['bytes_per_run']:.0f} B/run",
                        flush=True,
                    )
            big = big_history(server_url, args.big_runs) if args.big_runs else {}
        finally:
            server.cleanup()  # type: ignore[attr-defined]
    if big:
        print(
            f"{big['big_runs']:,} runs, {big['big_scores']:,} scores: first detection round (backfills the"
            f" observations) {big['detection_first_round_s']:.1f} s, then {big['detection_rounds_s']} s"
            f" per round ({big['detection_round_new_hour_s']:.2f} s for the first of an hour)"
            f" over {BIG_CELLS} cells; {big['big_bytes_per_run']:.0f} B/run; dropping the oldest day"
            f" ({len(big['partitions_dropped'])} partitions) {big['partition_drop_s'] * 1000:.1f} ms"
        )
    measured = [r for r in results if "error" not in r]
    largest = max(measured, key=lambda r: (r["cells"], r["replicas"])) if measured else {}
    final = {
        "cells": largest.get("cells"),
        "replicas": largest.get("replicas"),
        "lag_p99_s": largest.get("lag_p99_s"),
        "runs_per_s": largest.get("runs_per_s"),
        "detection_round_s_10m": big.get("detection_round_s_10m"),
        "bytes_per_run": largest.get("bytes_per_run"),
        "partition_drop_s": big.get("partition_drop_s"),
        "logprobs_bytes_jsonb": jsonb_bytes,
        "logprobs_bytes_stored": stored_bytes,
        **{
            k: v
            for k, v in big.items()
            if k not in ("partitions_dropped", "detection_round_s_10m", "partition_drop_s")
        },
        "configurations": results,
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
