"""The ``canary`` command line. Thin: parse, call, print; exit 0 pass, 1 fail, 2 error/inconclusive."""

from __future__ import annotations

import sys

import click

from canary import __version__
from canary.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="canary")
def main() -> None:
    """canary: a continuously running quality canary for LLM serving."""


def fail_config(exc: ConfigError) -> None:
    click.echo(f"config error: {exc}", err=True)
    sys.exit(2)


# --- Command registration: each subsystem's commands live in its own module. -----------------
# Modules registered here must not import JAX at import time (only inside the command body).
