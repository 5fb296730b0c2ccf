"""The ``canary`` command line: one module per command group; thin (parse, call, print).

Exit codes are CI gates: 0 pass, 1 fail, 2 error or inconclusive. Command modules must not
import JAX at import time (only inside a command body), so ``canary --help`` stays fast.
"""

from __future__ import annotations

import click

from canary import __version__
from canary.cli.alerts import alerts_group
from canary.cli.compare import compare_command
from canary.cli.dashboards import dashboards_group
from canary.cli.db import db
from canary.cli.demo import demo
from canary.cli.detect import detect_command
from canary.cli.results import results_command
from canary.cli.run import run
from canary.cli.sampler_check import sampler_check_command
from canary.cli.service import deploy_group, serve_command, verdict_command
from canary.fleet.cli import fleet_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="canary")
def main() -> None:
    """canary: a continuously running quality canary for LLM serving."""


for command in (
    run,
    compare_command,
    db,
    demo,
    detect_command,
    results_command,
    alerts_group,
    serve_command,
    deploy_group,
    verdict_command,
    dashboards_group,
    sampler_check_command,
    fleet_command,
):
    main.add_command(command)
