"""One detection case end to end: seeded runs in PostgreSQL, the product's ``detect`` and ``canary detect``.

A cell probes 10 probe versions every 5 minutes; ``unexpected_script`` fails 0.1 % of the time
for two days, then 5 % (corruption) for the last two hours. The product's ``detect`` runs after
every pass from the fault's start, through PostgreSQL, until the finding appears; then
``canary detect --once`` (a subprocess, the real command) must report it and exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import sqlalchemy as sa

from canary.config.sections import DetectionSpec
from canary.detection.detect import detect
from canary.storage.engine import async_engine, database
from canary.storage.tables import ProbeRow, RunRow, ScoreRow, TargetRow

CELL = "bench-model/own-api/short-context"
PROBES, STEP = 10, timedelta(minutes=5)
HEALTHY, FAULTY = 0.001, 0.05
FAULT_FOR = timedelta(hours=2)


async def _seed(url: str, now: datetime, rng: np.random.Generator) -> tuple[int, datetime]:
    engine = async_engine(url)
    start, fault_at = now - timedelta(days=2), now - FAULT_FOR
    async with engine.begin() as conn:
        model, platform, pool = CELL.split("/")
        tid = await conn.scalar(
            sa.insert(TargetRow)
            .values(
                cell=CELL,
                model=model,
                platform=platform,
                pool=pool,
                provider="openai-chat",
                base_url="http://127.0.0.1:9/v1",
                model_id=model,
            )  # fmt: skip
            .returning(TargetRow.id)
        )
        rows = [{"probe_id": f"p{i}", "probe_set": "bench", "version": 1, "content_hash": f"h{i}", "spec": {}}
                for i in range(PROBES)]  # fmt: skip
        probes = list((await conn.execute(sa.insert(ProbeRow).returning(ProbeRow.id), rows)).scalars())
        runs: list[dict[str, Any]] = []
        t = start
        while t < now:
            pass_id = uuid.uuid4()
            for probe in probes:
                runs.append({"pass_id": pass_id, "target_id": tid, "probe_pk": probe, "started_at": t,
                             "status": "ok", "latency_ms": 10.0, "output_text": "ok"})  # fmt: skip
            t += STEP
        ids = list(
            (
                await conn.execute(sa.insert(RunRow).returning(RunRow.id, sort_by_parameter_order=True), runs)
            ).scalars()
        )
        rates = np.array([FAULTY if r["started_at"] >= fault_at else HEALTHY for r in runs])
        failed = rng.random(rates.size) < rates
        await conn.execute(
            sa.insert(ScoreRow),
            [{"run_id": i, "target_id": tid, "probe_pk": r["probe_pk"], "metric": "unexpected_script",
              "passed": not bool(f), "detail": {}, "created_at": r["started_at"]}
             for i, r, f in zip(ids, runs, failed, strict=True)],
        )  # fmt: skip
    await engine.dispose()
    return tid, fault_at


async def _first_detection(url: str, fault_at: datetime, now: datetime) -> int | None:
    """Passes after the fault's start until the product's detect stores the finding."""
    engine = async_engine(url)
    try:
        t, passes = fault_at, 0
        while t <= now:
            found = await detect(engine, DetectionSpec(), t, rng=np.random.default_rng(0))
            if any(f.cell == CELL and f.metric == "unexpected_script" for f in found):
                return passes
            t += STEP
            passes += 1
        return None
    finally:
        await engine.dispose()


def postgres_case() -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    with (
        tempfile.TemporaryDirectory(prefix="canary-bench-pg-") as tmp,
        database(None, Path(tmp) / "pg") as url,
    ):
        _, fault_at = anyio.run(_seed, url, now, np.random.default_rng(20250825))
        passes = anyio.run(_first_detection, url, fault_at, now)
        config = Path(tmp) / "canary.toml"
        config.write_text(
            f'[alerts]\nfor_s = 0\n[[targets]]\nmodel = "bench-model"\nplatform = "own-api"\n'
            f'pool = "short-context"\nprovider = "openai-chat"\nbase_url = "http://127.0.0.1:9/v1"\n'
            f'model_id = "bench-model"\n# {CELL}\n'
        )
        cli = subprocess.run(
            [sys.executable, "-m", "canary", "detect", "--once", "--config", str(config)],
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finding = next((line for line in cli.stdout.splitlines() if line.startswith("FINDING")), "")
    return {
        "fault": f"unexpected_script {HEALTHY:.1%} -> {FAULTY:.0%} on {PROBES} probe versions every 5 min",
        "passes_to_detect": passes,
        "observations_to_detect": None if passes is None else (passes + 1) * PROBES,
        "canary_detect_exit_code": cli.returncode,
        "canary_detect_reports_it": CELL in finding,
    }
