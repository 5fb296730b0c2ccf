"""The ``canary`` command line. Thin: parse, call, print; exit 0 pass, 1 fail, 2 error/inconclusive."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import anyio
import click
from rich.console import Console
from rich.progress import Progress

from canary import __version__
from canary.catalog import Probe, load_catalog
from canary.cli_common import config_option, data_dir_option, fail_config, load_or_exit
from canary.config import Target
from canary.db import alembic_config, async_engine, database, migrate, redact_url
from canary.errors import ConfigError
from canary.logs import configure_logging
from canary.report import print_pass
from canary.runner import planned_runs, run_pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="canary")
def main() -> None:
    """canary: a continuously running quality canary for LLM serving."""


@main.command()
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="Run a single pass and exit (otherwise repeat every interval).")
@click.option("--cells", default=None, help="Comma-separated globs over cell names (model/platform/pool).")
@click.option("--probes", default=None, help="Comma-separated globs over probe ids or probe sets.")
@click.option("--deploy-id", default=None, help="Tag the runs with this deploy id.")
@click.option("--log-level", default="WARNING", show_default=True)
def run(
    config_path: Path,
    data_dir: Path | None,
    once: bool,
    cells: str | None,
    probes: str | None,
    deploy_id: str | None,
    log_level: str,
) -> None:
    """Probe every selected cell with every selected probe, score, store and summarise.

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
        failed = anyio.run(passes, url, targets, selected, deploy_id, once, config.defaults.interval_s)
    sys.exit(1 if failed else 0)


async def passes(
    url: str, targets: list[Target], probes: list[Probe], deploy_id: str | None, once: bool, interval_s: float
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
            print_pass(summary)
            if once:
                return summary.failed_runs
            await anyio.sleep(interval_s)
    finally:
        await engine.dispose()


@main.group()
def db() -> None:
    """Database schema: apply or roll back migrations."""


@db.command("upgrade")
@config_option
@data_dir_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: Path, data_dir: Path | None, revision: str) -> None:
    """Apply migrations up to REVISION (also done automatically on start)."""
    config = load_or_exit(config_path) if config_path.exists() else None
    url = config.database_url if config else None
    with database(url, data_dir or (config.data_dir if config else None), upgrade=False) as resolved:
        migrate(resolved, revision)
        click.echo(f"database at {revision}: {redact_url(resolved)}")


@db.command("downgrade")
@config_option
@data_dir_option
@click.argument("revision")
def db_downgrade(config_path: Path, data_dir: Path | None, revision: str) -> None:
    """Roll migrations back to REVISION (e.g. "base")."""
    from alembic import command

    config = load_or_exit(config_path) if config_path.exists() else None
    url = config.database_url if config else None
    with database(url, data_dir or (config.data_dir if config else None), upgrade=False) as resolved:
        command.downgrade(alembic_config(resolved), revision)
        click.echo(f"database at {revision}")


@main.command()
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Scenario to replay (default: scenarios/postmortem.toml).",
)
@click.option(
    "--days-per-pass",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Scenario days that pass between two canary passes.",
)
@click.option("--probes", default=None, help="Probe globs (default: a probe set per kind of evidence).")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Per cell.")
@data_dir_option
@click.option("--log-level", default="WARNING", show_default=True)
def demo(
    scenario: Path | None,
    days_per_pass: float,
    probes: str | None,
    concurrency: int,
    data_dir: Path | None,
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

    from canary.demo import DEFAULT_PROBES, DEFAULT_SCENARIO, run_demo

    configure_logging(log_level)
    run_demo(
        scenario_path=scenario or DEFAULT_SCENARIO,
        days_per_pass=days_per_pass,
        probes_pattern=probes or DEFAULT_PROBES,
        concurrency=concurrency,
        data_dir=data_dir,
        database_url=os.environ.get("DATABASE_URL"),
    )


# --- Command registration: each subsystem's commands live in its own module. -----------------
# Modules registered here must not import JAX at import time (only inside the command body).
# One import line and one add_command line per subsystem.
from canary.alerts_cli import register as alerts_register  # noqa: E402
from canary.dashboards_cli import dashboards_group  # noqa: E402
from canary.fleet.cli import fleet_command  # noqa: E402
from canary.sampler_check import sampler_check_command  # noqa: E402
from canary.service_cli import deploy_group, serve_command, verdict_command  # noqa: E402

main.add_command(sampler_check_command)
main.add_command(fleet_command)
main.add_command(serve_command)
main.add_command(deploy_group)
main.add_command(verdict_command)
main.add_command(dashboards_group)
alerts_register(main)
