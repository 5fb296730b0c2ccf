"""Part 1 of ``bench/scale.py``: N cells on R replicas of ``canary serve`` sharing one PostgreSQL.

For each cell count and replica count: real ``canary serve`` processes (``--shard i/N``) probe a
zero-latency loopback upstream (another process); after all are ready and ``--warmup`` seconds
more (registration and first passes are start-up, not the steady state), figures are taken over
``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import canary_command
from bench._scale_db import SIZE, detection_rounds_s, drop, new_database, postgres_cpu_s, scalar
from bench.service import (
    bound_socket,
    histogram_quantile,
    lag_buckets,
    serve_upstream,
    stored_runs,
    wait_listening,
    wait_ready,
    write_config,
)

HISTOGRAMS = ("canary_scheduler_lag_seconds", "canary_event_loop_lag_seconds")
COUNTERS = ("canary_pass_timeouts_total", "canary_membership_errors_total")


def scrape(ports: list[int]) -> dict[str, dict[float, float]]:
    """The replicas' lag histograms summed (cumulative count per bucket bound), and their counters
    summed (under the bound 0)."""
    merged: dict[str, dict[float, float]] = {name: {} for name in (*HISTOGRAMS, *COUNTERS)}
    for port in ports:
        # A saturated replica answers slowly; give it a minute rather than lose the run.
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
        for name in HISTOGRAMS:
            for le, count in lag_buckets(text, name):
                merged[name][le] = merged[name].get(le, 0.0) + count
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in COUNTERS:
                merged[name][0.0] = merged[name].get(0.0, 0.0) + float(line.rsplit(" ", 1)[1])
    return merged


def window(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict[str, Any]:
    """What the replicas counted between two scrapes."""
    out: dict[str, Any] = {}
    for name, series in after.items():
        buckets = sorted((le, count - before[name].get(le, 0.0)) for le, count in series.items())
        out[name] = buckets if name in HISTOGRAMS else sum(count for _, count in buckets)
    return out


def cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds of the replicas so far."""
    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


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
                "serve",
                "--config",
                str(config),
                "--log-level",
                "WARNING",
                "--port",
                str(port),
                "--shard",
                f"{i}/{replicas}",
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
        scraped0 = scrape(ports)
        runs0, cpu0, t0 = stored_runs(url), postgres_cpu_s(pg_pid), time.perf_counter()
        replica_cpu0 = cpu_s(procs)
        rss = [0.0] * replicas
        while time.perf_counter() - t0 < args.duration:
            time.sleep(1.0)
            for i, proc in enumerate(procs):
                rss[i] = max(rss[i], psutil.Process(proc.pid).memory_info().rss / 2**20)
        elapsed = time.perf_counter() - t0
        runs1, cpu1, replica_cpu1 = stored_runs(url), postgres_cpu_s(pg_pid), cpu_s(procs)
        load = os.getloadavg()[0]
        counted = window(scraped0, scrape(ports))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=90)
        upstream.terminate()
        upstream.join()
    buckets, loop = counted["canary_scheduler_lag_seconds"], counted["canary_event_loop_lag_seconds"]
    stored = max(runs1 - runs0, 1)
    (detect_s,) = detection_rounds_s(url, [datetime.now(UTC)])
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
        # What bounds a saturated configuration: the replicas' own CPU, and how late their loops woke.
        "replica_cpu_ms_per_run": round(1000 * (replica_cpu1 - replica_cpu0) / stored, 2),
        "replica_cpu_cores": round((replica_cpu1 - replica_cpu0) / elapsed, 2),
        "loop_lag_p99_s": round(histogram_quantile(0.99, loop), 3),
        "pass_timeouts": int(counted["canary_pass_timeouts_total"]),
        "membership_errors": int(counted["canary_membership_errors_total"]),
        "load_1m": round(load, 2),
        "detection_round_s": round(detect_s, 3),
        "rss_mb_per_replica": round(max(rss), 1),
        "bytes_per_run": round(float(scalar(url, SIZE) or 0) / total_runs, 1),
    }
    drop(server_url, name)
    return figures


def ratio(figure: float, of_one: float) -> float | None:
    """``figure`` over one replica's; None when one replica's is zero (a saturated replica)."""
    return round(figure / of_one, 2) if of_one > 0 else None


def grid(workdir: Path, server_url: str, pg_pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (cells, replicas) configuration, printed as it ends; ratios are to one replica."""
    results: list[dict[str, Any]] = []
    for cells in (int(c) for c in args.cells.split(",") if c):
        one: dict[str, Any] | None = None
        for replicas in (int(r) for r in args.replicas.split(",") if r):
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
                f" {f['db_cpu_ms_per_run']:.2f} ms CPU/run, replicas {f['replica_cpu_ms_per_run']:.1f} ms"
                f" CPU/run ({f['replica_cpu_cores']:.2f} cores, loop lag p99 {f['loop_lag_p99_s']:.2f} s,"
                f" {f['pass_timeouts']} pass timeouts), detection {f['detection_round_s']:.2f} s,"
                f" RSS {f['rss_mb_per_replica']:.0f} MB/replica, {f['bytes_per_run']:.0f} B/run;"
                f" load {f['load_1m']:.1f} on {os.cpu_count()} cores",
                flush=True,
            )
    return results
