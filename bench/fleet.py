"""Benchmark the reference fleet: throughput under 50 concurrent requests, and one demo pass.

    .venv/bin/python bench/fleet.py [--seconds 10] [--concurrency 50]

1. Throughput: ``concurrency`` clients send catalog prompts (temperature as the probe says)
   back to back to the pools and front doors for ``seconds``; completion tokens per second and
   requests per second are counted from the responses.
2. Demo pass: every catalog probe (with its repeats) on the 12 pool cells of the default
   fleet, through canary's own OpenAI chat provider, 4 requests in flight per cell as the
   runner does by default; the wall time of the whole pass is ``demo_pass_s``
   (target: under a minute on 2 cores).

Prints the machine it ran on, the figures, and finally one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import httpx
import jax

from canary.config.loader import build_config
from canary.fleet import default_fleet_config, fleet_targets, run_fleet_in_thread
from canary.probing.catalog import Probe, load_catalog
from canary.probing.providers import get_provider


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln), ""
        )
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
    }


async def throughput(
    base_url: str, probes: list[Probe], models: list[str], seconds: float, concurrency: int
) -> dict[str, float]:
    paths = [
        "first-party",
        "cloud-a/short-context",
        "cloud-b",
        "cloud-b/long-context",
        "cloud-a/long-context",
    ]
    light = [p for p in probes if len(p.prompt) < 20_000]
    deadline = time.perf_counter() + seconds
    tokens = requests = errors = 0

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal tokens, requests, errors
        rng = random.Random(n)
        while time.perf_counter() < deadline:
            probe = rng.choice(light)
            body = {
                "model": rng.choice(models),
                "messages": [{"role": "user", "content": probe.prompt}],
                "temperature": probe.spec.temperature,
                "max_tokens": probe.spec.max_tokens,
            }
            response = await client.post(f"{base_url}/{rng.choice(paths)}/v1/chat/completions", json=body)
            if response.status_code != 200:
                errors += 1
                continue
            requests += 1
            tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client, n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"tokens_per_s": tokens / elapsed, "requests_per_s": requests / elapsed, "errors": errors}


async def demo_pass(base_url: str, probes: list[Probe]) -> dict[str, float]:
    config = default_fleet_config()
    cells = build_config({"targets": fleet_targets(config, base_url, front_doors=False)}, "<bench>").targets
    runs = failed = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        provider = get_provider("openai-chat", client)

        async def cell_pass(target: Any) -> None:
            nonlocal runs, failed
            gate = asyncio.Semaphore(target.concurrency)

            async def one(probe: Probe, k: int) -> None:
                nonlocal runs, failed
                async with gate:
                    completion = await provider.complete(target, probe.request("chat", session_key=f"s{k}"))
                runs += 1
                failed += not completion.ok

            await asyncio.gather(*(one(p, k) for p in probes for k in range(p.spec.repeat)))

        await asyncio.gather(*(cell_pass(t) for t in cells))
    return {
        "demo_pass_s": time.perf_counter() - started,
        "demo_runs": runs,
        "demo_failed_runs": failed,
        "cells": len(cells),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    info = machine()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
    probes = list(load_catalog().probes)
    started = time.perf_counter()
    with run_fleet_in_thread(default_fleet_config(), warm_up=True) as fleet:
        ready = time.perf_counter() - started
        print(f"fleet up and sampler compiled in {ready:.1f}s ({len(fleet.fleet.vocab)} tokens)")
        models = fleet.config.model_names
        figures = asyncio.run(throughput(fleet.base_url, probes, models, args.seconds, args.concurrency))
        rate = f"{figures['tokens_per_s']:.0f} tokens/s, {figures['requests_per_s']:.1f} requests/s"
        print(f"throughput @ {args.concurrency} concurrent: {rate}")
        demo = asyncio.run(demo_pass(fleet.base_url, probes))
        runs = f"{demo['demo_runs']} runs ({demo['demo_failed_runs']} failed) on {demo['cells']} cells"
        print(f"demo pass: {runs} in {demo['demo_pass_s']:.1f}s")
    result = {
        **{k: round(v, 2) for k, v in {**figures, **demo}.items()},
        "concurrency": args.concurrency,
        "machine": info,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
