"""``canary demo``: replay the postmortem on the reference fleet and show when each fault was caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from canary.cli.common import data_dir_option
from canary.cli.output import OutputFormat, console_for_output, emit, format_option
from canary.logs import configure_logging


@click.command()
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Scenario to replay (default: scenarios/postmortem.toml; scenarios/healthy.toml has no faults).",
)
@click.option(
    "--days-per-pass",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Scenario days that pass between two canary passes.",
)
@click.option(
    "--passes",
    type=click.IntRange(min=1),
    default=None,
    help="Replay the scenario in this many passes instead (e.g. scenarios/healthy.toml over 100,000 runs).",
)
@click.option("--probes", default=None, help="Probe globs (default: a probe set per kind of evidence).")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Per cell.")
@data_dir_option
@format_option("the fault table (plain and json keep the progress lines on stderr)")
@click.option("--log-level", default="WARNING", show_default=True)
def demo(
    scenario: Path | None,
    days_per_pass: float,
    passes: int | None,
    probes: str | None,
    concurrency: int,
    data_dir: Path | None,
    output_format: OutputFormat,
    log_level: str,
) -> None:
    """Replay the postmortem on the reference fleet and show when each fault was caught.

    Starts a private PostgreSQL and the reference fleet on loopback, probes every pool and
    front door, replays the incident's time line, runs detection after every pass, and prints
    for each fault when it began and when the canary first flagged it. Uses DATABASE_URL when
    set. Exit 0 when the replay completed (a fault too rare to observe is reported, not an
    error), 2 on an error.
    """
    import os

    from canary.fleet.demo import (
        DEFAULT_PROBES,
        DEFAULT_SCENARIO,
        fault_table,
        print_result,
        result_data,
        run_demo,
    )

    configure_logging(log_level)

    def show(result: Any, scenario: Any, console: Console) -> None:
        if output_format != "table":
            emit(output_format, fault_table(result), result_data(result))
        print_result(result, scenario, console, table=output_format == "table")

    run_demo(
        scenario_path=scenario or DEFAULT_SCENARIO,
        days_per_pass=days_per_pass,
        passes=passes,
        probes_pattern=probes or DEFAULT_PROBES,
        concurrency=concurrency,
        data_dir=data_dir,
        database_url=os.environ.get("DATABASE_URL"),
        console=console_for_output(stderr=output_format != "table"),
        show=show,
    )
