"""``canary results``: stored runs and scores exported for CI and analysis, with a gate's exit code.

``--format csv`` and ``jsonl`` write one row per run's availability and per score
(:mod:`canary.storage.exports`); ``table`` and ``junit`` one line or test case per (cell, probe,
metric) (:mod:`canary.cli.result_cases`). Whatever the format, the exit code judges the cases:
0 when none fails, 1 when one does (its failure rate above ``--max-failure-rate``), 2 when
nothing matched (no evidence is not a pass) or on an error.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import anyio
import click
from rich.console import Console
from rich.table import Table

from canary.cli.common import config_option, data_dir_option, load_logged, log_level_option
from canary.cli.output import UNBOUNDED_WIDTH, console_for_output
from canary.cli.result_cases import Case, add_row, cut, junit_xml, sorted_cases
from canary.storage.exports import ResultRow

FORMATS = ("table", "csv", "jsonl", "junit")
CSV_COLUMNS = (
    "started_at", "cell", "probe", "probe_set", "version", "metric", "passed", "value", "status",
    "reason", "error", "latency_ms", "served_pool", "deploy_id", "run_id", "detail", "output",
)  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """``1h``, ``30m``, ``2d`` (that long before ``now``) or an ISO 8601 time (UTC unless it says)."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give a duration (90s, 30m, 1h, 2d, 1w) or an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def csv_values(row: ResultRow) -> list[Any]:
    record = row.as_dict()
    record["detail"] = json.dumps(row.detail, ensure_ascii=False, default=str) if row.detail else ""
    return ["" if record[c] is None else record[c] for c in CSV_COLUMNS]


def cases_table(cases: list[Case], max_failure_rate: float) -> Table:
    table = Table("cell", "probe", "metric", "runs", "failed", "rate", "verdict", "latest failure")
    for c in cases:
        sample = ""
        if c.sample is not None:
            sample = c.sample.reason or cut((c.sample.output or "").replace("\n", " "), 60)
        verdict = "FAIL" if c.failed(max_failure_rate) else "pass"
        table.add_row(c.cell, c.probe, c.metric, str(c.n), str(c.failures), f"{c.rate:.1%}", verdict, sample)
    return table


async def export(
    url: str,
    out: IO[str],
    output_format: str,
    window: tuple[datetime, datetime],
    globs: dict[str, str | None],
) -> dict[tuple[str, str, str], Case]:
    """Stream the rows to ``out`` (csv, jsonl) while counting them into cases; returns the cases."""
    from canary.storage.engine import async_engine
    from canary.storage.exports import result_rows

    cases: dict[tuple[str, str, str], Case] = {}
    writer = csv.writer(out) if output_format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    engine = async_engine(url)
    try:
        async with engine.connect() as conn:
            async for row in result_rows(conn, since=window[0], until=window[1], **globs):
                add_row(cases, row)
                if writer is not None:
                    writer.writerow(csv_values(row))
                elif output_format == "jsonl":
                    out.write(json.dumps(row.as_dict(), ensure_ascii=False, default=str) + "\n")
    finally:
        await engine.dispose()
    return cases


@click.command("results")
@config_option
@data_dir_option
@click.option("--cells", default=None, help="Globs over cell names (model/platform/pool); !glob excludes.")
@click.option("--probe", "probes", default=None, help="Globs over probe ids or probe sets.")
@click.option(
    "--metric", "metrics", default=None, help="Globs over metric names (availability: request errors)."
)
@click.option(
    "--since", default="1h", show_default=True, help="Duration back from now (30m, 1h, 2d) or ISO time."
)
@click.option(
    "--until", default=None, help="End of the window (default now): a duration back or an ISO time."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table or junit: one line or test case per (cell, probe, metric); csv or jsonl: one row per run"
    " and score.",
)
@click.option(
    "--max-failure-rate",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="A case fails when more than this fraction of its runs failed.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here, not stdout.",
)
@log_level_option
def results_command(
    config_path: Path,
    data_dir: Path | None,
    cells: str | None,
    probes: str | None,
    metrics: str | None,
    since: str,
    until: str | None,
    output_format: str,
    max_failure_rate: float,
    output: Path | None,
    log_level: str,
) -> None:
    """Export stored results as a table, CSV, JSON lines or JUnit XML, and gate on them.

    Exit 0 when no (cell, probe, metric) failed, 1 when one did (more than --max-failure-rate of
    its runs), 2 when nothing matched the selection or on an error.
    """
    from canary.storage.engine import database

    now = datetime.now(UTC)
    window = (parse_when(since, now), parse_when(until, now) if until else now)
    config = load_logged(config_path, log_level)
    globs = {"cells": cells, "probes": probes, "metrics": metrics}
    with click.open_file(str(output or "-"), "w", encoding="utf-8") as out:
        with database(config.database_url, data_dir or config.data_dir) as url:
            cases = sorted_cases(anyio.run(export, url, out, output_format, window, globs))
        if output_format == "junit":
            out.write(junit_xml(cases, since=window[0], until=window[1], max_failure_rate=max_failure_rate))
        elif output_format == "table":
            console = console_for_output() if output is None else Console(file=out, width=UNBOUNDED_WIDTH)
            console.print(cases_table(cases, max_failure_rate))
    failing = sum(c.failed(max_failure_rate) for c in cases)
    rows = sum(c.n for c in cases)
    click.echo(f"{rows} rows, {len(cases)} cases, {failing} failing", err=True)
    sys.exit(2 if not cases else 1 if failing else 0)
