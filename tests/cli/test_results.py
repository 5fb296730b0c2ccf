"""``canary results`` over a real seeded database: CSV, JSON lines, JUnit XML and the gate's exit code."""

from __future__ import annotations

import csv
import io
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import click
import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from canary.cli import main
from canary.cli.results import parse_when
from canary.detection.queries import AVAILABILITY as DETECTION_AVAILABILITY
from canary.storage.engine import async_engine
from canary.storage.exports import AVAILABILITY
from canary.storage.tables import RunRow
from tests.seeding import FAILING_TEXT, add_cells, add_passes, add_probes

CELLS = ["m/p/a", "m/p/b", "other/p/c"]


async def seed(url: str, now: datetime) -> None:
    """Three probes every 5 minutes for 50 minutes on three cells; m/p/a fails refund-policy for
    its last 4 passes of 10; m/p/b has one timed-out run and one cancelled at shutdown."""
    engine = async_engine(url)
    rng = np.random.default_rng(0)
    broken_at = now - timedelta(minutes=20)  # refund-policy fails on m/p/a from here on
    async with engine.begin() as conn:
        ids = await add_cells(conn, CELLS)
        probes = await add_probes(conn, 3)
        for cell in CELLS:
            broken = cell == "m/p/a"
            rates = {
                "refund-policy": lambda t, b=broken: 1.0 if b and t >= broken_at else 0.0,  # type: ignore[misc]
                "unexpected_script": 0.0,
            }
            await add_passes(
                conn, ids[cell], probes, now - timedelta(minutes=48), now, timedelta(minutes=5), rates, rng
            )
        lost = {
            "pass_id": uuid.uuid4(),
            "target_id": ids["m/p/b"],
            "probe_pk": probes[0],
            "latency_ms": 5000.0,
        }
        await conn.execute(
            sa.insert(RunRow),
            [
                {**lost, "started_at": now - timedelta(minutes=2), "status": "error", "reason": "timeout",
                 "error": "no answer within 5 s"},
                {**lost, "started_at": now - timedelta(minutes=1), "status": "error", "reason": "cancelled",
                 "error": "shut down"},
            ],
        )  # fmt: skip
        # A corrupted answer with control characters XML 1.0 forbids: the report must still parse.
        await conn.execute(
            sa.update(RunRow)
            .where(
                RunRow.id
                == sa.select(sa.func.max(RunRow.id))
                .where(RunRow.output_text == FAILING_TEXT)
                .scalar_subquery()
            )
            .values(output_text=FAILING_TEXT + " \x1b[31m\x07")
        )
    await engine.dispose()


@pytest.fixture
def invoke(db_url: str, tmp_path: Path) -> Iterator[object]:
    """``canary results ARGS`` on a freshly seeded database (its passes end now)."""
    anyio.run(seed, db_url, datetime.now(UTC))
    config = tmp_path / "canary.toml"
    config.write_text(
        '[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a"\nprovider = "openai-chat"\n'
        'base_url = "http://127.0.0.1:9/v1"\nmodel_id = "m"\n'
    )
    runner = CliRunner(env={"DATABASE_URL": db_url})

    def run(*args: str) -> Result:
        return runner.invoke(main, ["results", "--config", str(config), *args])

    yield run


def test_junit_has_a_testcase_per_cell_probe_and_metric_with_the_failing_evidence(invoke) -> None:  # type: ignore[no-untyped-def]
    result = invoke("--cells", "m/*", "--since", "1h", "--format", "junit")
    assert result.exit_code == 1, result.output
    xml = result.stdout
    root = ET.fromstring(xml.encode())
    assert root.tag == "testsuites"
    assert root.get("tests") == str(2 * 3 * 3)  # 2 cells x 3 probes x (availability + 2 metrics)
    assert root.get("failures") == str(3 + 1)  # refund-policy on each of m/p/a's probes; one timeout
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"m/p/a", "m/p/b"}
    assert suites["m/p/a"].get("failures") == "3" and suites["m/p/b"].get("failures") == "1"
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 18
    refund = cases[("m/p/a", "p0: refund-policy")].find("failure")
    assert refund is not None
    assert refund.get("message") == "4/10 runs failed (40.0%)" and refund.get("type") == "refund-policy"
    assert refund.text is not None and "latest failing run" in refund.text and "สวัสดี" in refund.text
    timeout = cases[("m/p/b", "p0: availability")].find("failure")
    assert (
        timeout is not None and timeout.get("message") == "1/11 runs failed (9.1%)"
    )  # the cancelled run is left out
    assert (
        timeout.text is not None
        and "reasons: timeout 1" in timeout.text
        and "no answer within 5 s" in timeout.text
    )
    passing = cases[("m/p/b", "p1: refund-policy")]
    assert passing.find("failure") is None and float(passing.get("time") or "nan") == pytest.approx(0.01)
    # The answer is quoted with its control characters escaped, visible and valid XML.
    corrupted = cases[("m/p/a", "p2: refund-policy")].find("failure")
    assert corrupted is not None and corrupted.text is not None
    assert "\\x1b[31m\\x07" in corrupted.text and "\x1b" not in xml


def test_csv_and_jsonl_give_one_row_per_run_and_score(invoke) -> None:  # type: ignore[no-untyped-def]
    as_csv = invoke("--cells", "m/p/b", "--format", "csv")
    assert as_csv.exit_code == 1  # the timeout
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 31 + 30 * 2  # a row per run (availability) and per score
    assert {r["metric"] for r in rows} == {AVAILABILITY, "refund-policy", "unexpected_script"}
    [lost] = [r for r in rows if r["status"] == "error"]
    assert lost["reason"] == "timeout" and lost["passed"] == "False" and lost["metric"] == AVAILABILITY
    assert all(r["cell"] == "m/p/b" and r["started_at"] for r in rows)
    as_jsonl = invoke("--cells", "m/p/a", "--probe", "p0", "--metric", "refund-*", "--format", "jsonl")
    records = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert len(records) == 10 and {(r["probe"], r["metric"]) for r in records} == {("p0", "refund-policy")}
    assert sum(not r["passed"] for r in records) == 4
    assert datetime.fromisoformat(records[0]["started_at"]) < datetime.fromisoformat(
        records[-1]["started_at"]
    )


def test_the_exit_code_gates_on_the_selection(invoke) -> None:  # type: ignore[no-untyped-def]
    assert invoke("--cells", "m/p/b", "--metric", "unexpected_script,refund-policy").exit_code == 0
    assert invoke("--cells", "m/p/a", "--metric", "refund-policy").exit_code == 1
    assert invoke("--cells", "m/p/a", "--metric", "refund-policy", "--max-failure-rate", "0.5").exit_code == 0
    assert invoke("--cells", "m/p/a", "--since", "10m", "--metric", "refund-policy").exit_code == 1
    assert invoke("--cells", "m/p/a", "--until", "30m", "--metric", "refund-policy").exit_code == 0
    nothing = invoke("--cells", "no/such/cell")
    assert nothing.exit_code == 2 and "0 rows, 0 cases" in nothing.stderr
    assert invoke("--since", "yesterday").exit_code == 2


def test_the_table_names_every_case_whole(invoke) -> None:  # type: ignore[no-untyped-def]
    result = invoke("--format", "table")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any("other/p/c" in ln and "refund-policy" in ln and "pass" in ln for ln in lines)
    assert any("m/p/a" in ln and "refund-policy" in ln and "FAIL" in ln and "40.0%" in ln for ln in lines)
    assert any("m/p/b" in ln and "availability" in ln and "timeout" in ln for ln in lines)


def test_a_report_written_to_a_file(invoke, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "canary.xml"
    assert invoke("--format", "junit", "-o", str(path)).exit_code == 1
    assert ET.parse(path).getroot().get("tests") == str(3 * 3 * 3)


def test_durations_and_times_for_the_window() -> None:
    now = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
    assert parse_when("90s", now) == now - timedelta(seconds=90)
    assert parse_when("1.5h", now) == now - timedelta(minutes=90)
    assert parse_when("2d", now) == now - timedelta(days=2)
    assert parse_when("2025-08-29T10:00:00", now) == datetime(2025, 8, 29, 10, tzinfo=UTC)
    assert parse_when("2025-08-29T10:00:00+02:00", now) == datetime(2025, 8, 29, 8, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_when("soon", now)


def test_exports_name_request_errors_as_detection_does() -> None:
    assert AVAILABILITY == DETECTION_AVAILABILITY


def test_junit_stays_parseable_whatever_the_stored_error_and_detail_hold() -> None:
    from canary.cli.result_cases import build_cases, junit_xml
    from canary.storage.exports import ResultRow

    at = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
    row = ResultRow(
        run_id=1, started_at=at, cell="m/p/<a&b>", probe="p0", probe_set="s", version=1, metric="m",
        passed=False, value=None, status="ok", reason=None, error="bad \x1b byte", latency_ms=12.0,
        served_pool=None, deploy_id=None, output="x" * 5000, detail={"answer": "\x0c\ud800"},
    )  # fmt: skip
    xml = junit_xml(build_cases([row]), since=at - timedelta(hours=1), until=at)
    failure = ET.fromstring(xml.encode()).find("testsuite/testcase/failure")
    assert failure is not None and failure.text is not None
    assert "m/p/<a&b> p0 m: 1/1 runs failed (100.0%)" in failure.text
    assert len(failure.text) < 2000  # the 5,000-character answer is cut
