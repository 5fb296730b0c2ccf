"""Command output where CI reads it (stdout not a terminal): names and notes whole, plain and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import numpy as np
import pytest
from click.testing import CliRunner
from rich.table import Table

from canary.cli import main
from canary.cli.output import console_for_output, plain_lines
from canary.config.sections import VerdictPolicy
from canary.fleet.demo import DemoResult, Detection, print_result, result_data
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.storage.engine import async_engine
from canary.verdicts.deploys import create_deploy, evaluate_running
from tests.alerting.kit import make_finding
from tests.loopback import ThreadedServer, serve_in_thread
from tests.seeding import add_cells, add_passes, add_probes
from tests.upstream import ScriptedUpstream

LONG_METRIC = "refund-policy-for-enterprise-customers-in-the-european-union"
OTHER_METRIC = "answer-mentions-the-thirty-day-return-window"
CELLS = ["m/p/canary-pool-with-a-long-name", "m/p/baseline-pool-with-a-long-name"]
POLICY = VerdictPolicy(min_samples=5, critical_metrics=(LONG_METRIC,))


async def seed_deploy(url: str) -> None:
    """A finished deploy whose canary fails LONG_METRIC half the time, the baseline never."""
    engine = async_engine(url)
    start = datetime.now(UTC) - timedelta(hours=2)
    rng = np.random.default_rng(7)
    async with engine.begin() as conn:
        ids = await add_cells(conn, CELLS)
        probes = await add_probes(conn, 10)
        for cell, rate in zip(CELLS, (0.5, 0.0), strict=True):
            end, step = start + timedelta(hours=1), timedelta(minutes=5)
            rates = {LONG_METRIC: rate, OTHER_METRIC: 0.0}
            await add_passes(conn, ids[cell], probes, start, end, step, rates, rng)
    await create_deploy(engine, "v2", CELLS[:1], CELLS[1:], start, 3600)
    await evaluate_running(engine, POLICY, datetime.now(UTC))
    await engine.dispose()


@pytest.fixture
def service(db_url: str) -> Iterator[ThreadedServer]:
    anyio.run(seed_deploy, db_url)
    # The server's engine connects only inside the server's own event loop.
    ctx = ApiContext(async_engine(db_url), ServiceMetrics(), CELLS, POLICY)
    with serve_in_thread(create_app(ctx)) as server:
        yield server


def test_a_piped_verdict_prints_every_metric_name_and_note_whole(service: ThreadedServer) -> None:
    env = {**os.environ, "COLUMNS": "", "CANARY_URL": service.url}
    proc = subprocess.run(
        [sys.executable, "-m", "canary", "verdict", "v2"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1, proc.stderr  # FAIL
    assert "v2 (" in proc.stdout and "FAIL" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if LONG_METRIC in line)
    assert "FAIL" in row and "critical" in row
    assert OTHER_METRIC in proc.stdout
    assert "…" not in proc.stdout


def test_a_verdict_as_plain_lines_and_as_json(service: ThreadedServer) -> None:
    runner = CliRunner()
    plain = runner.invoke(main, ["verdict", "v2", "--url", service.url, "--format", "plain"])
    assert plain.exit_code == 1
    header, *rows = plain.stdout.splitlines()
    assert plain.stderr.startswith("v2 (") and "FAIL" in plain.stderr
    assert header.split("\t") == ["metric", "outcome", "canary", "baseline", "effect", "p", "n (c/b)", "note"]
    by_metric = {line.split("\t")[0]: line.split("\t") for line in rows}
    assert by_metric[LONG_METRIC][1] == "FAIL" and by_metric[LONG_METRIC][-1] == "critical"
    assert by_metric[OTHER_METRIC][-1] == ""
    as_json = runner.invoke(main, ["verdict", "v2", "--url", service.url, "--format", "json"])
    view = json.loads(as_json.output)
    assert view["verdict"] == "FAIL" and LONG_METRIC in {m["metric"] for m in view["metrics"]}
    legacy = runner.invoke(main, ["verdict", "v2", "--url", service.url, "--json"])
    assert json.loads(legacy.output) == view


def test_plain_lines_drop_markup_and_keep_one_line_per_row() -> None:
    table = Table("fault", "first flagged")
    table.add_row("corrupt", "[red]not flagged[/]")
    table.add_row("multi\nline", "a\tb")
    assert plain_lines(table) == ["fault\tfirst flagged", "corrupt\tnot flagged", "multi line\ta b"]


PROBES = f"""
[[probe]]
id = "capital-of-france-asked-in-a-long-winded-way"
prompt = "What is the capital of France?"
reference_answer = "Paris"

[[probe.assert]]
metric = "{LONG_METRIC}"
type = "contains"
value = "Paris"

[[probe.assert]]
metric = "{OTHER_METRIC}"
type = "max_chars"
value = 5
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve_in_thread(ScriptedUpstream().app) as server:
        yield server


def test_a_piped_pass_table_and_its_json(db_url: str, tmp_path: Path, upstream: ThreadedServer) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "checks.toml").write_text(PROBES)
    config = tmp_path / "canary.toml"
    config.write_text(
        'probes_dir = "probes"\n[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a-pool-with-a-long-name"\n'
        f'provider = "openai-chat"\nbase_url = "{upstream.url}/v1"\nmodel_id = "ok"\n'
    )
    runner = CliRunner(env={"DATABASE_URL": db_url})
    table = runner.invoke(main, ["run", "--once", "--config", str(config)])
    assert table.exit_code == 0, table.output
    for name in ("m/p/a-pool-with-a-long-name", LONG_METRIC, OTHER_METRIC, "100% (1)", "0% (1)"):
        assert name in table.output
    assert "…" not in table.output
    as_json = runner.invoke(main, ["run", "--once", "--config", str(config), "--format", "json"])
    [cell] = json.loads(as_json.output)["cells"]
    assert cell["metrics"][LONG_METRIC] == {"passed": 1, "total": 1}
    assert cell["metrics"][OTHER_METRIC] == {"passed": 0, "total": 1}


def test_the_demo_fault_table_keeps_each_fault_on_one_whole_line_when_piped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cell = "llama-3.1-8b-instruct/first-party/front-door"
    flagged = Detection("misroute", "first-party", None, 4.0, None, "misrouting after the LB change", 14.0)
    flagged.finding = make_finding(1, cell, "routing")
    missed = Detection("corrupt", "cloud-b", "short-context", 2.0, 9.0, "rare corruption")
    result = DemoResult(detections=[flagged, missed], passes=25, runs=15750)

    class Scenario:
        name = "postmortem"

    print_result(result, Scenario(), console_for_output())
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("misroute" in ln and f"routing on {cell} (self)" in ln and "10 d" in ln for ln in lines)
    assert any("corrupt" in ln and "cloud-b/short-context" in ln and "not flagged" in ln for ln in lines)
    assert "…" not in out and "25 passes, 15,750 runs" in out
    data = result_data(result)
    assert [f["cell"] for f in data["faults"]] == [cell, None] and data["runs"] == 15750
    json.dumps(data)
