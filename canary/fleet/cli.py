"""``canary fleet``: serve the reference fleet on loopback until interrupted.

This module must not import JAX at import time (``canary --help`` stays fast); everything
that needs it is imported inside the command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from canary.errors import ConfigError


@click.command("fleet")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Fleet TOML file."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8400, show_default=True, type=int, help="Port (0 = any free port).")
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Replay a fault time line, e.g. scenarios/postmortem.toml.",
)
@click.option("--seconds-per-day", type=float, help="Compress the scenario: real seconds per scenario day.")
@click.option("--warm-up/--no-warm-up", default=True, show_default=True, help="Compile the sampler first.")
def fleet_command(
    config_path: Path | None,
    host: str,
    port: int,
    scenario_path: Path | None,
    seconds_per_day: float | None,
    warm_up: bool,
) -> None:
    """Serve the reference fleet: OpenAI and Anthropic APIs for every platform and pool.

    Pools are at http://HOST:PORT/{platform}/{pool}/v1/..., front doors at
    http://HOST:PORT/{platform}/v1/...; faults are switched with POST /admin/faults.
    """
    import uvicorn

    from canary.fleet.config import default_fleet_config, fleet_targets, load_fleet_config
    from canary.fleet.scenario import ScenarioClock, ScenarioRunner, load_scenario
    from canary.fleet.server import Fleet, build_app
    from canary.logs import UVICORN_LOG_CONFIG

    try:
        config = load_fleet_config(config_path) if config_path else default_fleet_config()
        scenario = load_scenario(scenario_path) if scenario_path else None
        fleet = Fleet(config)
        if scenario is not None:
            clock = ScenarioClock(seconds_per_day or scenario.seconds_per_day)
            fleet.scenario = ScenarioRunner(scenario, fleet.state, clock)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    fleet.engine.start()
    if warm_up:
        click.echo("compiling the sampler for every batch size…", err=True)
        fleet.engine.warm_up()
    base = f"http://{host}:{port}"
    targets = fleet_targets(config, base)
    click.echo(f"reference fleet on {base}: {len(config.models)} models, {len(targets)} cells", err=True)
    for platform in config.platforms:
        pools = ", ".join(p.name for p in platform.pools)
        click.echo(f"  {base}/{platform.name}  (front door; pools: {pools})", err=True)
    if fleet.scenario is not None:
        fleet.scenario.clock.start = time.time()  # day 0 is now, not before the warm-up
        fleet.scenario.start()
        click.echo(f"scenario '{fleet.scenario.scenario.name}' running", err=True)
    try:
        uvicorn.run(
            build_app(fleet),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            log_config=UVICORN_LOG_CONFIG,
        )
    finally:
        if fleet.scenario is not None:
            fleet.scenario.stop()
        fleet.engine.stop()
