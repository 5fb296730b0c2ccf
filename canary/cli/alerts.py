"""``canary detect`` and ``canary alerts list|dispatch``: detection, alert state and the outbox by hand.

Exit codes follow the CLI convention: 0 nothing firing, 1 at least one alert firing, 2 a
configuration error."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import click
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.cli.common import config_option, data_dir_option
from canary.config.loader import Config
from canary.errors import ConfigError
from canary.storage.tables import AlertDeliveryRow, AlertRow, TargetRow

log_level_option = click.option("--log-level", default="WARNING", show_default=True)


def load(config_path: Path, log_level: str) -> Config:
    from canary.cli.common import load_or_exit
    from canary.logs import configure_logging

    configure_logging(log_level)
    return load_or_exit(config_path)


async def firing_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).where(AlertRow.state == "firing")) or 0)


async def detect_rounds(url: str, config: Config, once: bool) -> int:
    """Detection, alert evaluation and one dispatch round, once or every ``detection.interval_s``."""
    from canary.alerting.incidents import Dispatcher, alerts_spec, evaluate_alerts
    from canary.detection.queries import detect, detection_spec
    from canary.storage.engine import async_engine

    dspec = detection_spec(config.raw.detection, config.path)
    aspec = alerts_spec(config.raw.alerts, config.path)
    dispatcher = Dispatcher(aspec, path=config.path)
    engine = async_engine(url)
    try:
        while True:
            now = datetime.now(UTC)
            findings = await detect(engine, dspec, now)
            for f in findings:
                click.echo(f"FINDING {f.message}")
            for change in await evaluate_alerts(engine, findings, aspec, now):
                if change.event is not None:
                    click.echo(f"ALERT {change.event.upper()} {change.cell} {change.metric}")
            sent = await dispatcher.dispatch_once(engine, now)
            firing = await firing_count(engine)
            summary = f"{len(findings)} findings, {firing} alerts firing, {sent} notifications attempted"
            click.echo(summary, err=True)
            if once:
                return firing
            await anyio.sleep(dspec.interval_s)
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

    config = load(config_path, log_level)
    try:
        with database(config.database_url, data_dir or config.data_dir) as url:
            firing = anyio.run(detect_rounds, url, config, once)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    sys.exit(1 if firing else 0)


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

    config = load(config_path, "WARNING")
    with database(config.database_url, data_dir or config.data_dir) as url:
        firing = anyio.run(list_alerts, url, show_all)
    sys.exit(1 if firing else 0)


async def dispatch_loop(url: str, config: Config, once: bool) -> int:
    from canary.alerting.incidents import Dispatcher, alerts_spec
    from canary.storage.engine import async_engine

    dispatcher = Dispatcher(alerts_spec(config.raw.alerts, config.path), path=config.path)
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

    config = load(config_path, log_level)
    try:
        with database(config.database_url, data_dir or config.data_dir) as url:
            sent = anyio.run(dispatch_loop, url, config, once)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{sent} notifications attempted", err=True)
