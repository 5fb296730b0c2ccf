"""Options and helpers shared by every command module (kept apart so they import no commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from canary.config.loader import Config, load_config
from canary.errors import ConfigError


def fail_config(exc: ConfigError) -> NoReturn:
    """Report a configuration error as ``config error: FILE: KEY.PATH: problem``; exit 2, no traceback."""
    click.echo(f"config error: {exc}", err=True)
    sys.exit(2)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CANARY_CONFIG",
    default="canary.toml",
    show_default=True,
    help="canary.toml to use (or $CANARY_CONFIG).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedded PostgreSQL data directory (used when no DATABASE_URL is set).",
)


log_level_option = click.option("--log-level", default="WARNING", show_default=True)


def load_or_exit(config_path: Path) -> Config:
    """The whole configuration, every section validated and every secret resolved, or exit 2."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail_config(exc)


def load_logged(config_path: Path, log_level: str) -> Config:
    """Configure logging at ``log_level``, then :func:`load_or_exit`."""
    from canary.logs import configure_logging

    configure_logging(log_level)
    return load_or_exit(config_path)
