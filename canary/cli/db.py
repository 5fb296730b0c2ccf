"""``canary db upgrade|downgrade``: apply or roll back the schema migrations."""

from __future__ import annotations

from pathlib import Path

import click

from canary.cli.common import config_option, data_dir_option, load_or_exit
from canary.storage.engine import alembic_config, database, migrate, redact_url


@click.group()
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
