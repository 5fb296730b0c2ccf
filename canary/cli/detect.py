"""``canary detect``: detection rounds by hand (detect -> alerts -> dispatch), printing what they find.

Exit codes follow the CLI convention: 0 nothing firing, 1 at least one alert firing, 2 a
configuration error (reported when the configuration loads, before any database work)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import click
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.cli.common import config_option, data_dir_option, load_logged, log_level_option
from canary.config.loader import Config
from canary.storage.tables import AlertRow


async def firing_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).where(AlertRow.state == "firing")) or 0)


async def detect_rounds(url: str, config: Config, once: bool) -> int:
    """:func:`~canary.alerting.round.detection_round`, once or every ``detection.interval_s``."""
    from canary.alerting.outbox import OutboxDispatcher
    from canary.alerting.round import detection_round
    from canary.storage.engine import async_engine

    dispatcher = OutboxDispatcher.from_spec(config.alerts, config.path, receivers=config.receivers)
    engine = async_engine(url)
    try:
        while True:
            result = await detection_round(
                engine, config.detection, config.alerts, dispatcher, datetime.now(UTC), config.intervals
            )
            for f in result.findings:
                click.echo(f"FINDING {f.message}")
            for change in result.changes:
                if change.event is not None:
                    click.echo(f"ALERT {change.event.upper()} {change.cell} {change.metric}")
            firing = await firing_count(engine)
            click.echo(
                f"{len(result.findings)} findings, {firing} alerts firing, "
                f"{result.attempted} notifications attempted",
                err=True,
            )
            if once:
                return firing
            await anyio.sleep(config.detection.interval_s)
    finally:
        await engine.dispose()


@click.command("detect")
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="One round, then exit (else repeat every detection.interval_s).")
@log_level_option
def detect_command(config_path: Path, data_dir: Path | None, once: bool, log_level: str) -> None:
    """Run detection over stored scores, update alerts, send due notifications, print findings.

    Exit 0 when no alert is firing, 1 when at least one is, 2 on a configuration error.
    """
    from canary.storage.engine import database

    config = load_logged(config_path, log_level)
    with database(config.database_url, data_dir or config.data_dir) as url:
        firing = anyio.run(detect_rounds, url, config, once)
    sys.exit(1 if firing else 0)
