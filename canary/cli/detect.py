"""``canary detect``: detection rounds by hand (detect -> alerts -> dispatch), printing what they find.

Exit codes follow the CLI convention: 0 healthy, 1 at least one alert in a failing state
(``--fail-on firing``, the default; ``--fail-on pending`` also counts alerts still waiting out
``for_s``, which a CI gate should not read as healthy), 2 a configuration error (reported when the
configuration loads, before any database work)."""

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

FAIL_ON = {"firing": ("firing",), "pending": ("pending", "firing")}


async def alert_counts(engine: AsyncEngine) -> dict[str, int]:
    """Open alerts by state."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(AlertRow.state, sa.func.count())
            .where(AlertRow.state.in_(("pending", "firing")))
            .group_by(AlertRow.state)
        )
        return {state: int(n) for state, n in rows.all()}


async def detect_rounds(url: str, config: Config, once: bool, fail_on: str = "firing") -> int:
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
            counts = await alert_counts(engine)
            click.echo(
                f"{len(result.findings)} findings, {counts.get('firing', 0)} alerts firing, "
                f"{counts.get('pending', 0)} pending, {result.attempted} notifications attempted",
                err=True,
            )
            if once:
                return sum(counts.get(state, 0) for state in FAIL_ON[fail_on])
            await anyio.sleep(config.detection.interval_s)
    finally:
        await engine.dispose()


@click.command("detect")
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="One round, then exit (else repeat every detection.interval_s).")
@click.option(
    "--fail-on",
    type=click.Choice(sorted(FAIL_ON)),
    default="firing",
    show_default=True,
    help="With --once: exit 1 when an alert is firing, or (pending) also when one is pending.",
)
@log_level_option
def detect_command(
    config_path: Path, data_dir: Path | None, once: bool, fail_on: str, log_level: str
) -> None:
    """Run detection over stored scores, update alerts, send due notifications, print findings.

    Exit 0 when no alert is firing (or pending, with --fail-on pending), 1 when one is, 2 on a
    configuration error.
    """
    from canary.storage.engine import database

    config = load_logged(config_path, log_level)
    with database(config.database_url, data_dir or config.data_dir) as url:
        failing = anyio.run(detect_rounds, url, config, once, fail_on)
    sys.exit(1 if failing else 0)
