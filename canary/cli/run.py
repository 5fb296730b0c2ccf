"""``canary run``: probe, score and store passes over the selected cells and probes."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import anyio
import click
from rich.console import Console
from rich.progress import Progress

from canary.cli.common import config_option, data_dir_option, fail_config, load_or_exit
from canary.cli.output import OutputFormat, format_option
from canary.cli.report import print_pass
from canary.config.loader import Target
from canary.errors import ConfigError
from canary.logs import configure_logging
from canary.probing.catalog import Probe, load_catalog
from canary.probing.runner import planned_runs, run_pass
from canary.storage.engine import async_engine, database


@click.command()
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="Run a single pass and exit (otherwise repeat every interval).")
@click.option(
    "--cells",
    default=None,
    help="Comma-separated globs over cell names (model/platform/pool); !glob excludes.",
)
@click.option(
    "--probes", default=None, help="Comma-separated globs over probe ids or probe sets; !glob excludes."
)
@click.option("--deploy-id", default=None, help="Tag the runs with this deploy id.")
@format_option("each pass's per-cell summary")
@click.option("--log-level", default="WARNING", show_default=True)
def run(
    config_path: Path,
    data_dir: Path | None,
    once: bool,
    cells: str | None,
    probes: str | None,
    deploy_id: str | None,
    output_format: OutputFormat,
    log_level: str,
) -> None:
    """Probe every selected cell with every selected probe, score, store and summarise.

    A cell whose target has a ``probes`` key runs only the selected probes that key selects too.

    Exit 0 when every run got an answer, 1 when some runs failed, 2 on a configuration error.
    """
    configure_logging(log_level)
    config = load_or_exit(config_path)
    try:
        catalog = load_catalog(config.probes_dir)
    except ConfigError as exc:
        fail_config(exc)
    targets = config.select(cells)
    selected = catalog.select(probes)
    if not targets or not selected:
        click.echo(f"nothing to run: {len(targets)} cells and {len(selected)} probes selected", err=True)
        sys.exit(2)
    with database(config.database_url, data_dir or config.data_dir) as url:
        failed = anyio.run(
            passes, url, targets, selected, deploy_id, once, config.defaults.interval_s, output_format
        )
    sys.exit(1 if failed else 0)


async def passes(
    url: str,
    targets: list[Target],
    probes: list[Probe],
    deploy_id: str | None,
    once: bool,
    interval_s: float,
    output_format: OutputFormat = "table",
) -> int:
    """Run passes (one, or one per interval until interrupted); returns the last pass's failures."""
    engine = async_engine(url)
    console = Console(stderr=True)
    try:
        while True:
            total = sum(planned_runs(t, probes) for t in targets)
            with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
                task = progress.add_task("probing", total=total)
                summary = await run_pass(
                    engine,
                    targets,
                    probes,
                    deploy_id=deploy_id,
                    on_stored=functools.partial(progress.advance, task),
                )
            print_pass(summary, output_format)
            if once:
                return summary.failed_runs
            await anyio.sleep(interval_s)
    finally:
        await engine.dispose()
