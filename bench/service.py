"""``canary serve`` with 1,000 cells against a loopback upstream: scheduler lag, probes/s, RSS, start-up.

The service runs as a real ``canary serve`` process against an external PostgreSQL (a private
embedded server started first, so start-up is measured as it would be with ``DATABASE_URL``);
the upstream runs in a third process. Start-up is the time from spawning the process to the
first 200 from ``/readyz``. Lag quantiles come from the service's own
``canary_scheduler_lag_seconds`` histogram (interpolated within buckets, as Prometheus'
``histogram_quantile`` does); probes/s counts stored runs over the measured window.

    .venv/bin/python bench/service.py [--cells 1000] [--interval 60] [--duration 120]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import print_machine  # noqa: E402
from canary.storage.engine import ensure_database, migrate, sqlalchemy_url, start_embedded, with_database  # noqa: E402

PROBE = """[[probe]]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"
scorers = ["unexpected_script"]
"""


def serve_upstream(sock: socket.socket) -> None:
    """A minimal OpenAI-compatible chat server with no artificial latency."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        message = {"role": "assistant", "content": "Paris is the capital of France."}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 8},
            }
        )

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def write_config(workdir: Path, cells: int, interval: float, upstream: str, port: int) -> Path:
    (workdir / "probes").mkdir()
    (workdir / "probes" / "basic.toml").write_text(PROBE)
    lines = [
        'probes_dir = "probes"',
        f"[defaults]\ninterval_s = {interval}\njitter_s = {min(5.0, interval / 10)}\nconcurrency = 2",
        f'[service]\nhost = "127.0.0.1"\nport = {port}\n[service.schedule]\nstart_spread_s = {interval}',
    ]
    for i in range(cells):
        lines.append(
            f'[[targets]]\nmodel = "m{i % 10}"\nplatform = "p{i % 4}"\npool = "pool{i}"\n'
            f'provider = "openai-chat"\nbase_url = "{upstream}/v1"\nmodel_id = "bench"\ntimeout_s = 30'
        )
    path = workdir / "canary.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' interpolation over cumulative ``(le, count)`` buckets."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return prev_le


def lag_buckets(metrics_text: str, name: str = "canary_scheduler_lag_seconds") -> list[tuple[float, float]]:
    out = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float(le), float(line.rsplit(" ", 1)[1])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between passes of one cell")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds measured after ready")
    args = parser.parse_args()
    print_machine()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server_url, server = start_embedded(workdir / "pg")
        ensure_database(server_url, "canary")
        db_url = sqlalchemy_url(with_database(server_url, "canary"))
        migrate(db_url)
        upstream_sock, api_sock = bound_socket(), bound_socket()
        api_port = api_sock.getsockname()[1]
        api_sock.close()
        upstream = multiprocessing.get_context("spawn").Process(target=serve_upstream, args=(upstream_sock,))
        upstream.start()
        wait_listening(upstream_sock.getsockname()[1])  # so it does not compete with start-up below
        config = write_config(
            workdir, args.cells, args.interval, f"http://127.0.0.1:{upstream_sock.getsockname()[1]}", api_port
        )
        env = {**os.environ, "DATABASE_URL": db_url}
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "canary", "serve", "--config", str(config), "--log-level", "WARNING"]
        proc = subprocess.Popen(cmd, env=env, cwd=workdir)
        base = f"http://127.0.0.1:{api_port}"
        try:
            startup_s = wait_ready(base, proc)
            startup_s = time.perf_counter() - started
            print(
                f"{args.cells} cells, one pass per cell every {args.interval:g} s; ready in {startup_s:.2f} s"
            )
            count_from = stored_runs(db_url)
            window_start = time.perf_counter()
            rss_peak = 0.0
            while time.perf_counter() - window_start < args.duration:
                time.sleep(1.0)
                rss_peak = max(rss_peak, psutil.Process(proc.pid).memory_info().rss / 2**20)
            elapsed = time.perf_counter() - window_start
            probes = stored_runs(db_url) - count_from
            buckets = lag_buckets(httpx.get(f"{base}/metrics", timeout=10).text)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            upstream.terminate()
            server.cleanup()  # type: ignore[attr-defined]
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    expected = args.cells / args.interval
    print(f"scheduler lag p50 {p50:.3f} s, p99 {p99:.3f} s over {int(buckets[-1][1])} job starts")
    print(f"probes/s {probes / elapsed:.1f} (configured rate {expected:.1f}/s); peak RSS {rss_peak:.0f} MB")
    result = {
        "cells": args.cells,
        "interval_s": args.interval,
        "lag_p50_s": round(p50, 4),
        "lag_p99_s": round(p99, 4),
        "probes_per_s": round(probes / elapsed, 2),
        "configured_per_s": round(expected, 2),
        "rss_mb": round(rss_peak, 1),
        "startup_s": round(startup_s, 3),
    }
    print(json.dumps(result))


def wait_listening(port: int) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> float:
    """Poll ``/readyz`` with one client (a new httpx client per poll costs tens of ms of CPU)."""
    started = time.perf_counter()
    with httpx.Client(timeout=1) as client:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"canary serve exited with {proc.returncode}")
            try:
                if client.get(f"{base}/readyz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)


def stored_runs(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text("SELECT count(*) FROM runs")) or 0)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
