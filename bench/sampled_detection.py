"""The detection round's added cost of the sampled equivalence test (``equivalence.sampled``) at 1,000 cells.

Seeds an embedded PostgreSQL with ``--cells`` cells (``--models`` models, so each cell has
``cells / models - 1`` peers), each with ``--samples`` stored sampled runs of each of the 4
sampled prompts in the window (20: two hourly passes of 10 samples in the 2-hour peer window),
then measures the product's own code:

1. the read: :func:`canary.detection.equivalence_reads.cell_runs` with the sampled counts, and
   :func:`~canary.detection.equivalence_reads.read_sampled` for the cells a round tests, against
   the read without them (what the round read before);
2. the statistics: :func:`canary.detection.equivalence.equivalence_candidates` with the sampled
   evidence against without, in a first round (every cell tested), a steady round (no new
   sampled runs: every cell keeps its comparison, no text is read) and a round in which 1/60
   of the cells have new runs (hourly passes, a round a minute: their texts and their chosen
   peers' are read);
3. whole ``detect`` rounds (cold, then warm), with their phases.

Prints the figures, the machine and its load, then one JSON line.

    .venv/bin/python bench/sampled_detection.py [--cells 1000] [--models 10] [--samples 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import numpy as np
import sqlalchemy as sa

from bench._common import print_machine
from canary.config.sections import DetectionSpec
from canary.detection import equivalence_reads, queries
from canary.detection.detect import detect
from canary.detection.equivalence import SampledMemo, equivalence_candidates, sampled_to_read
from canary.probing.equivalence_runs import SETS
from canary.storage.engine import async_engine, database
from canary.storage.tables import ProbeRow, RunRow, TargetRow

PROMPTS = 4
WORDS = [f"w{i}" for i in range(40)]


def texts(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` completions of ~30 words: per position a skewed choice, like a model at temperature 1."""
    weights = 0.6 ** np.arange(len(WORDS))
    weights /= weights.sum()
    picks = rng.choice(len(WORDS), size=(n, 30), p=weights)
    return [" ".join(WORDS[i] for i in row) for row in picks]


async def seed(url: str, now: datetime, cells: int, models: int, samples: int) -> None:
    rng = np.random.default_rng(15)
    engine = async_engine(url)
    async with engine.begin() as conn:
        targets = [
            {"cell": f"m{c % models}/p{c // models}/pool", "model": f"m{c % models}",
             "platform": f"p{c // models}", "pool": "pool", "provider": "openai-chat",
             "base_url": "http://127.0.0.1:9/v1", "model_id": "m"}
            for c in range(cells)
        ]  # fmt: skip
        ids = list((await conn.execute(sa.insert(TargetRow).returning(TargetRow.id), targets)).scalars())
        probes = [
            {"probe_id": f"sm{k}", "probe_set": SETS["sampled"], "version": 1, "content_hash": f"h{k}",
             "spec": {"prompt": f"prompt {k}"}}
            for k in range(PROMPTS)
        ]  # fmt: skip
        pks = list((await conn.execute(sa.insert(ProbeRow).returning(ProbeRow.id), probes)).scalars())
        for tid in ids:
            passes = [uuid.uuid4() for _ in range(2)]
            runs = [
                {"pass_id": passes[i * 2 // samples], "target_id": tid, "probe_pk": pk,
                 "started_at": now - timedelta(minutes=100 - i), "status": "ok", "latency_ms": 10.0,
                 "output_text": text}
                for pk in pks
                for i, text in enumerate(texts(rng, samples))
            ]  # fmt: skip
            await conn.execute(sa.insert(RunRow), runs)
    await engine.dispose()


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


async def measure(url: str, now: datetime) -> dict[str, Any]:
    spec, engine = DetectionSpec(), async_engine(url)
    since = now - timedelta(seconds=spec.peer_window_s)
    memo: SampledMemo = {}
    async with engine.connect() as conn:
        names = await queries.targets(conn)
        read_plain, plain = await timed_async(equivalence_reads.cell_runs(conn, since, now))
        read_counts, evidence = await timed_async(equivalence_reads.cell_runs(conn, since, now, sampled=True))
        read_all, _ = await timed_async(
            equivalence_reads.read_sampled(conn, evidence, since, now, sampled_to_read(evidence, names, memo))
        )
        baseline_s, _ = timed(equivalence_candidates, plain, names, spec, {}, {})
        first_s, found = timed(equivalence_candidates, evidence, names, spec, {}, memo)
        steady_s, _ = timed(equivalence_candidates, evidence, names, spec, {}, memo)
        # A round a minute, passes hourly: 1 in 60 cells has new sampled runs.
        some = {
            tid: dataclasses.replace(runs, sampled={}, sampled_latest=runs.sampled_latest + (tid % 60 == 0))
            for tid, runs in evidence.items()
        }
        wanted = sampled_to_read(some, names, memo)
        read_some, _ = await timed_async(equivalence_reads.read_sampled(conn, some, since, now, wanted))
        minute_s, _ = timed(equivalence_candidates, some, names, spec, {}, memo)
    rounds = []
    for _ in range(2):
        phases: dict[str, float] = {}
        start = time.perf_counter()
        await detect(engine, spec, now, phases=phases)
        rounds.append((time.perf_counter() - start, phases))
    await engine.dispose()
    return {
        "cells": len(evidence),
        "sampled_runs": sum(len(t) for r in evidence.values() for t in r.sampled.values()),
        "first_round_read_added_s": read_counts + read_all - read_plain,
        "first_round_statistics_s": first_s - baseline_s,
        "steady_round_read_added_s": read_counts - read_plain,
        "steady_round_statistics_s": steady_s - baseline_s,
        "new_1_in_60_cells_read": len(wanted),
        "new_1_in_60_read_added_s": read_counts + read_some - read_plain,
        "new_1_in_60_statistics_s": minute_s - baseline_s,
        "false_findings": len(found),
        "detect_cold_s": rounds[0][0],
        "detect_warm_s": rounds[1][0],
        "detect_warm_equivalence_phase_s": rounds[1][1].get("equivalence", 0.0),
    }


async def timed_async(work: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = await work
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20, help="sampled runs per prompt per cell")
    args = parser.parse_args()
    print_machine()
    now = datetime.now(UTC).replace(microsecond=0)
    with (
        tempfile.TemporaryDirectory(prefix="canary-bench-sampled-") as tmp,
        database(None, Path(tmp) / "pg") as url,
    ):
        start = time.perf_counter()
        anyio.run(seed, url, now, args.cells, args.models, args.samples)
        print(
            f"seeded {args.cells} cells x {PROMPTS} prompts x {args.samples} samples"
            f" in {time.perf_counter() - start:.0f} s"
        )
        result = anyio.run(measure, url, now)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores shared: timings are pessimistic)")
    print(f"{result['cells']} cells, {result['sampled_runs']} sampled runs in the window")
    r = result
    print(
        f"first round (every cell tested): read +{r['first_round_read_added_s']:.3f} s, "
        f"statistics +{r['first_round_statistics_s']:.3f} s"
    )
    print(
        f"round without new sampled runs:  read +{r['steady_round_read_added_s']:.3f} s, "
        f"statistics +{r['steady_round_statistics_s']:.3f} s"
    )
    print(
        f"round with 1 in 60 cells new:    read +{r['new_1_in_60_read_added_s']:.3f} s "
        f"({r['new_1_in_60_cells_read']} cells' texts), statistics +{r['new_1_in_60_statistics_s']:.3f} s"
    )
    print(
        f"whole detect round: cold {result['detect_cold_s']:.2f} s, warm {result['detect_warm_s']:.2f} s "
        f"(equivalence phase {result['detect_warm_equivalence_phase_s']:.2f} s)"
    )
    print(f"findings on the healthy synthetic fleet: {result['false_findings']}")
    print(json.dumps({**result, "load_1m": load[0]}))


if __name__ == "__main__":
    main()
