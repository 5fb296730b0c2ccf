"""``canary sampler-check``: test a JAX sampler's conformance on the device it will run on.

The postmortem's third bug (an approximate top-k that dropped the argmax at some batch sizes,
and bf16/fp32 operations disagreeing on the argmax) is seen fastest by testing the compiled
sampler itself. This module is the command and its entry point; it imports JAX only inside
them, so ``canary`` starts without the accelerator stack. The sweep is in
:mod:`canary.sampler_check.sweep`, the invariants in :mod:`canary.sampler_check.reference`, the result in
:mod:`canary.sampler_check.report`.

Exit codes: 0 every invariant held, 1 an invariant was violated (each is printed with a minimal
reproducing input), 2 the sampler could not be loaded or broke the output contract.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from canary.cli.common import data_dir_option
from canary.sampler_check.grid import SweepCase, SweepGrid, default_grid, full_grid, small_grid

if TYPE_CHECKING:
    from canary.sampler_check.report import SamplerCheckReport
    from canary.sampler_check.samplers import Sampler

DEFAULT_SAMPLER = "canary.sampler_check.samplers:reference_sample"


class SamplerLoadError(Exception):
    """The ``module:function`` path does not name an importable callable."""


def load_sampler(path: str) -> Sampler:
    """Import ``module:function`` (dotted attributes allowed after the colon)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SamplerLoadError(f"{path!r}: expected module:function, e.g. {DEFAULT_SAMPLER}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # a broken module (ImportError, SyntaxError, ...) is a load failure: exit 2
        raise SamplerLoadError(f"{path!r}: cannot import {module_name}: {exc!r}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SamplerLoadError(f"{path!r}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SamplerLoadError(f"{path!r}: {attr} is not callable")
    return obj  # type: ignore[return-value,unused-ignore]  # the contract is checked on the first call


GRIDS: dict[str, Callable[[], SweepGrid]] = {"default": default_grid, "full": full_grid, "quick": small_grid}


def run_sampler_check(
    sampler_path: str = DEFAULT_SAMPLER,
    *,
    grid: str = "default",
    seed: int = 0,
    on_case: Callable[[SweepCase], None] | None = None,
) -> SamplerCheckReport:
    """Load the sampler and sweep the named grid; raises SamplerLoadError or SamplerContractError."""
    from canary.sampler_check.sweep import run_sweep

    sampler = load_sampler(sampler_path)
    return run_sweep(sampler, sampler_path, GRIDS[grid](), seed=seed, on_case=on_case)


@click.command("sampler-check")
@click.option(
    "--sampler",
    "sampler_path",
    default=DEFAULT_SAMPLER,
    show_default=True,
    metavar="MODULE:FUNCTION",
    help="The sampler to check (see canary.sampler_check.samplers.Sampler for the contract).",
)
@click.option(
    "--full", is_flag=True, help="Sweep the exhaustive grid (minutes on CPU) instead of the default."
)
@click.option("--quick", is_flag=True, help="Sweep a seconds-long smoke grid instead of the default.")
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of inputs and draws."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line instead of text.")
@click.option(
    "--store/--no-store",
    default=True,
    show_default=True,
    help="Record the report in the canary database ($DATABASE_URL, or the embedded one).",
)
@data_dir_option
def sampler_check_command(
    sampler_path: str, full: bool, quick: bool, seed: int, as_json: bool, store: bool, data_dir: Path | None
) -> None:
    """Check a JAX sampler's conformance on the default JAX device.

    Sweeps batch sizes, vocabulary sizes, bf16/fp32, temperatures, top-k and top-p over
    adversarial logits (ties, near-ties, bf16 collisions, peaked, flat, masked) and checks the
    results against an exact float64 reference: greedy returns the argmax, the argmax stays in
    the kept set, the kept set's mass reaches p, sampled frequencies pass a chi-square test,
    and nothing depends on batch size or position. Exit 0 conforms, 1 violated, 2 error.
    """
    if full and quick:
        raise click.UsageError("--full and --quick are mutually exclusive")  # exits 2
    from canary.sampler_check.sweep import SamplerContractError

    grid = "full" if full else "quick" if quick else "default"
    try:
        if sys.stderr.isatty():
            report = _run_with_progress(sampler_path, grid, seed)
        else:
            report = run_sampler_check(sampler_path, grid=grid, seed=seed)
    except (SamplerLoadError, SamplerContractError) as exc:
        click.echo(f"sampler-check: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(report.to_json())
    else:
        for line in report.summary_lines():
            click.echo(line)
    if store:
        from canary.sampler_check.store import store_report
        from canary.storage.engine import database

        with database(None, data_dir) as url:
            row_id = store_report(url, report)
        click.echo(f"stored as sampler_checks.id={row_id}", err=True)
    sys.exit(0 if report.passed else 1)


def _run_with_progress(sampler_path: str, grid: str, seed: int) -> SamplerCheckReport:
    """Run the sweep under a rich progress bar on stderr (compilation makes early cases slow)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("sampler-check", total=len(GRIDS[grid]().cases))

        def advance(case: SweepCase) -> None:
            progress.update(
                task, advance=1, description=f"{case.dtype} V={case.vocab} B={case.batch} k={case.top_k}"
            )

        return run_sampler_check(sampler_path, grid=grid, seed=seed, on_case=advance)
