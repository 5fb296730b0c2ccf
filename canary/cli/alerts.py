"""``canary alerts list|dispatch``: alert state and the outbox by hand (``canary detect`` is in
:mod:`canary.cli.detect`).

Exit codes follow the CLI convention: 0 nothing firing, 1 at least one alert firing, 2 a
configuration error (reported when the configuration loads)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import click
import sqlalchemy as sa

from canary.cli.common import config_option, data_dir_option, load_logged, log_level_option
from canary.config.loader import Config
from canary.storage.tables import AlertDeliveryRow, AlertRow, TargetRow


@click.group("alerts")
def alerts_group() -> None:
    """Alerts: list their state, or deliver pending notifications."""


async def list_alerts(url: str, show_all: bool) -> int:
    from canary.storage.engine import async_engine

    engine = async_engine(url)
    try:
        q = (
            sa.select(AlertRow.state, TargetRow.cell, AlertRow.metric, AlertRow.started_at, AlertRow.summary)
            .join(TargetRow, TargetRow.id == AlertRow.target_id)
            .order_by(AlertRow.started_at.desc())
        )
        if not show_all:
            q = q.where(AlertRow.state.in_(("pending", "firing")))
        async with engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            pending = await conn.scalar(
                sa.select(sa.func.count()).where(AlertDeliveryRow.status == "pending")
            )
        for state, cell, metric, started, summary in rows:
            click.echo(f"{state:<8} {cell} {metric} since {started:%Y-%m-%d %H:%MZ}  {summary}")
        click.echo(f"{len(rows)} alerts, {pending} notifications pending", err=True)
        return sum(1 for r in rows if r[0] == "firing")
    finally:
        await engine.dispose()


@alerts_group.command("list")
@config_option
@data_dir_option
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
def alerts_list(config_path: Path, data_dir: Path | None, show_all: bool) -> None:
    """List open alerts (pending and firing); exit 1 when any is firing."""
    from canary.storage.engine import database

    config = load_logged(config_path, "WARNING")
    with database(config.database_url, data_dir or config.data_dir) as url:
        firing = anyio.run(list_alerts, url, show_all)
    sys.exit(1 if firing else 0)


async def dispatch_loop(url: str, config: Config, once: bool) -> int:
    from canary.alerting.outbox import OutboxDispatcher
    from canary.storage.engine import async_engine

    dispatcher = OutboxDispatcher.from_spec(config.alerts, config.path, receivers=config.receivers)
    engine = async_engine(url)
    try:
        if once:
            return await dispatcher.dispatch_once(engine, datetime.now(UTC))
        await dispatcher.run(engine, anyio.Event())  # until interrupted
        return 0
    finally:
        await engine.dispose()


@alerts_group.command("dispatch")
@config_option
@data_dir_option
@click.option("--once", is_flag=True, help="One round, then exit (otherwise run until interrupted).")
@log_level_option
def alerts_dispatch(config_path: Path, data_dir: Path | None, once: bool, log_level: str) -> None:
    """Send pending alert notifications from the outbox, retrying with backoff."""
    from canary.storage.engine import database

    config = load_logged(config_path, log_level)
    with database(config.database_url, data_dir or config.data_dir) as url:
        sent = anyio.run(dispatch_loop, url, config, once)
    click.echo(f"{sent} notifications attempted", err=True)
