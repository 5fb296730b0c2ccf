"""probe -> score -> store throughput against a zero-latency loopback upstream.

Side by side in one run: canary's pass (providers, scorers, batched PostgreSQL writes) and a
bare httpx loop making the same requests with the same concurrency and doing nothing with the
answers. The upstream runs in its own process so that it does not share this process's GIL.

    .venv/bin/python bench/pipeline.py [--cells 10] [--probes 100] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, print_machine  # noqa: E402
from canary.config.loader import build_config  # noqa: E402
from canary.probing.catalog import load_catalog  # noqa: E402
from canary.probing.providers import get_provider  # noqa: E402
from canary.probing.runner import run_pass  # noqa: E402
from canary.storage.engine import async_engine, database  # noqa: E402

ANSWER = "The capital of France is Paris."


def serve_upstream(sock: socket.socket) -> None:
    """A minimal OpenAI-compatible chat server (no artificial latency)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 8},
            },
            headers={"x-served-pool": "short-context"},
        )

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")).run(
        sockets=[sock]
    )


def probe_files(directory: Path, count: int) -> None:
    lines = ['[defaults]\nscorers = ["answered", "unexpected_script"]\nallowed_scripts = ["Latin"]\n']
    for i in range(count):
        lines.append(
            f'[[probe]]\nid = "bench-{i:04d}"\nprompt = "Question {i}: what is the capital of France?"\n'
            f'reference_answer = "{ANSWER}"\n'
        )
    (directory / "bench.toml").write_text("\n".join(lines))


async def bare_loop(url: str, bodies: list[list[dict[str, object]]], concurrency: int) -> float:
    """The same requests with plain httpx, one client and limiter per cell as canary has:
    post, parse JSON, discard. Returns requests/s."""

    async def cell(requests: list[dict[str, object]]) -> None:
        limiter = anyio.CapacityLimiter(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client, anyio.create_task_group() as tg:
            for body in requests:
                tg.start_soon(one, client, limiter, body)

    async def one(client: httpx.AsyncClient, limiter: anyio.CapacityLimiter, body: dict[str, object]) -> None:
        async with limiter:
            response = await client.post(url, json=body, timeout=30)
            response.json()["choices"][0]["message"]["content"]

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for requests in bodies:
            tg.start_soon(cell, requests)
    return sum(map(len, bodies)) / (time.perf_counter() - started)


async def measure(args: argparse.Namespace, base_url: str, db_url: str, probes_dir: Path) -> dict[str, float]:
    targets = build_config(
        {
            "defaults": {"concurrency": args.concurrency},
            "targets": [
                {
                    "model": "bench",
                    "platform": "loopback",
                    "pool": f"pool-{i}",
                    "provider": "openai-chat",
                    "base_url": f"{base_url}/v1",
                    "model_id": "bench",
                    "served_by_headers": ["x-served-pool"],
                }
                for i in range(args.cells)
            ],
        },
        "bench",
    ).targets
    probes = load_catalog(probes_dir).probes
    async with httpx.AsyncClient() as client:
        provider = get_provider("openai-chat", client)
        bodies = [[provider.body(t, p.request("chat")) for p in probes] for t in targets]
    engine = async_engine(db_url)
    await run_pass(engine, targets[:1], probes[:10])  # warm-up: connections, probe rows
    canary_rates, bare_rates = [], []
    for _ in range(args.passes):
        bare_rates.append(await bare_loop(f"{base_url}/v1/chat/completions", bodies, args.concurrency))
        summary = await run_pass(engine, targets, probes)
        assert summary.stored == sum(map(len, bodies)) and summary.failed_runs == 0, summary.cells
        canary_rates.append(summary.stored / summary.duration_s)
    await engine.dispose()
    best_canary, best_bare = max(canary_rates), max(bare_rates)
    return {"probes_per_s": best_canary, "bare_httpx_probes_per_s": best_bare}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="per cell")
    args = parser.parse_args()
    print_machine()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    upstream = multiprocessing.get_context("fork").Process(target=serve_upstream, args=(sock,), daemon=True)
    upstream.start()
    time.sleep(1.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            probes_dir = Path(tmp) / "probes"
            probes_dir.mkdir()
            probe_files(probes_dir, args.probes)
            with database(None, Path(tmp) / "pg") as db_url:
                figures = anyio.run(measure, args, f"http://127.0.0.1:{port}", db_url, probes_dir)
    finally:
        upstream.terminate()
    figures["ratio_to_bare_httpx"] = figures["probes_per_s"] / figures["bare_httpx_probes_per_s"]
    figures["peak_rss_mb"] = peak_rss_mb()
    n = args.cells * args.probes
    print(f"{n} probes per pass ({args.cells} cells × {args.probes} probes), best of {args.passes} passes")
    print(f"canary probe→score→store: {figures['probes_per_s']:8.0f} probes/s")
    print(f"bare httpx loop:          {figures['bare_httpx_probes_per_s']:8.0f} requests/s")
    print(f"ratio:                    {figures['ratio_to_bare_httpx']:8.2f}   (target ≥ 0.5; ≥ 500 probes/s)")
    print(f"peak RSS:                 {figures['peak_rss_mb']:8.0f} MiB")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
