"""Prometheus for real: Debian's prometheus scrapes a running service, and the series come back.

The same Prometheus loads examples/prometheus/canary-rules.yml, so the recording rules are checked
on real series too; ``promtool check metrics`` reads the service's own /metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import evaluate_alerts
from canary.config.sections import AlertsSpec
from canary.service.app import Service
from tests.alerting.kit import make_finding
from tests.prombin import binary, running
from tests.service.conftest import FAST, MakeConfig, eventually

pytestmark = pytest.mark.anyio

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus" / "canary-rules.yml"
RATIO = "cell_metric:canary_score_failures:ratio_rate15m"
CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: canary
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


async def query(client: httpx.AsyncClient, promql: str) -> dict[str, float]:
    """An instant query's result as ``{cell or "": value}``."""
    response = await client.get("/api/v1/query", params={"query": promql})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return {r["metric"].get("cell", ""): float(r["value"][1]) for r in result}


async def test_prometheus_scrapes_the_service_and_the_rules_record_per_cell_failure_rates(
    db_url: str, engine: AsyncEngine, make_config: MakeConfig, tmp_path: Path
) -> None:
    config, catalog = make_config({"good": "ok", "bad": "corrupt"}, interval_s=1, service=FAST)
    service = Service(config, catalog, db_url, config.service)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        async with httpx.AsyncClient(base_url=service.base_url) as canary:
            exposition = (await canary.get("/metrics")).content
        lint = await anyio.run_process(
            [binary("promtool"), "check", "metrics"], input=exposition, check=False
        )
        assert lint.returncode == 0 and lint.stdout == lint.stderr == b"", lint.stdout + lint.stderr

        async def bad_cell() -> int:  # registered by the replica that claims it, not at start (0: not yet)
            async with engine.connect() as conn:
                return int(await conn.scalar(sa.text("SELECT id FROM targets WHERE cell = 'm/p/bad'")) or 0)

        await eventually(bad_cell, "m/p/bad registered")
        bad = await bad_cell()
        hook = {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}
        spec = AlertsSpec.model_validate({"for_s": 0, "receivers": [hook]})
        await evaluate_alerts(engine, [make_finding(bad, "m/p/bad")], spec, datetime.now(UTC))

        (tmp_path / "prometheus.yml").write_text(CONFIG.format(rules=RULES, port=service.port))
        args = [f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
        with running("prometheus", args, tmp_path / "prometheus.log") as prometheus:
            async with httpx.AsyncClient(base_url=prometheus.url, timeout=5) as prom:

                async def scraped() -> bool:
                    runs = await query(prom, 'sum by (cell) (canary_probe_runs_total{job="canary"})')
                    return runs.keys() == {"m/p/good", "m/p/bad"}

                await eventually(scraped, "Prometheus has the service's run counters")
                assert await query(prom, 'up{job="canary"}') == {"": 1.0}

                async def recorded() -> bool:
                    return len(await query(prom, RATIO)) == 2

                await eventually(recorded, "the recording rule has both cells", 60)
                ratios = await query(prom, RATIO)
                assert ratios["m/p/bad"] == 1.0 and ratios["m/p/good"] == 0.0  # every Thai answer fails
                assert await query(prom, "canary_outbox_pending") == {"": 1.0}
                assert await query(prom, "canary_open_alerts") == {"": 1.0}
                intervals = await query(prom, "canary_cell_probe_interval_seconds")
                assert intervals == {"m/p/good": 1.0, "m/p/bad": 1.0}
        service.stop()
