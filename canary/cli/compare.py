"""``canary compare``: is the model on these pools the same model? Equivalence probes, now."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import anyio
import click
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from canary.cli.common import config_option, fail_config, load_logged, log_level_option
from canary.config.loader import Target
from canary.errors import ConfigError
from canary.probing.audit import CellEvidence, collect
from canary.probing.equivalence import EquivalenceCatalog, default_equivalence_dir, load_equivalence
from canary.stats.audit import cell_verdict, compare_forced, compare_greedy, compare_sampled, exit_code
from canary.stats.equivalence import Comparison, Verdict

TESTS = ("forced", "greedy", "sampled")


@click.command("compare")
@config_option
@click.option(
    "--cells", required=True, help="Globs over the cells to audit (model/platform/pool); !glob excludes."
)
@click.option(
    "--against",
    default=None,
    help="Globs over the peers to compare them with (default: every other cell of the same model).",
)
@click.option(
    "--budget-tokens",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Tokens (input and output) each cell may spend; forced rounds stop before passing it.",
)
@click.option(
    "--alpha",
    default=0.001,
    show_default=True,
    type=click.FloatRange(0.0, 0.5, min_open=True),
    help="False-different level of the whole table (Bonferroni over its tests).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the MMD permutations.")
@log_level_option
def compare_command(
    config_path: Path,
    cells: str,
    against: str | None,
    budget_tokens: int,
    alpha: float,
    seed: int,
    log_level: str,
) -> None:
    """Run the equivalence probes now and print each cell against its peers.

    Per cell and test (``forced`` teacher-forced log-likelihood, ``greedy`` temperature-0
    agreement, ``sampled`` MMD on samples; each target's ``equivalence`` key says which it
    supports): the statistic, the effect with its confidence interval, the tolerance, the
    p-value, the tokens the cell spent and the verdict. Peers are the same model's cells that
    ``--against`` selects (default: all of them), the audited cell excepted; ``--alpha`` is the
    level of the whole table. Nothing is stored.

    Exit 0 when every cell is equivalent to its peers, 1 when one is different, 2 when there is
    not enough evidence (or on a configuration error).
    """
    config = load_logged(config_path, log_level)
    try:
        catalog = load_equivalence(
            default_equivalence_dir()
            if config.probes_dir is None
            else Path(config.probes_dir) / "equivalence"
        )
    except ConfigError as exc:
        fail_config(exc)
    audited = config.select(cells)
    peers = config.select(against) if against else list(config.targets)
    if not audited:
        click.echo("no cell selected by --cells", err=True)
        sys.exit(2)
    everyone = list({t.cell: t for t in [*audited, *peers]}.values())
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"probing {len(everyone)} cells (budget {budget_tokens:,} tokens a cell)…", style="dim")
    evidence = anyio.run(_collect, everyone, catalog, budget_tokens)
    tests = sum(len(t.spec.equivalence_tests()) for t in audited)
    rows: list[tuple[str, int, str, Comparison, CellEvidence]] = []
    verdicts: list[Verdict] = []
    rng = np.random.default_rng(seed)
    for target in audited:
        group = [
            evidence[p.cell] for p in peers if p.cell != target.cell and p.spec.model == target.spec.model
        ]
        results = _compare(target, evidence[target.cell], group, alpha / max(tests, 1), rng)
        verdicts.append(cell_verdict([c for _, c in results]))
        rows.extend((target.cell, len(group), test, c, evidence[target.cell]) for test, c in results)
    console.print(_table(rows))
    for cell, ev in evidence.items():
        if ev.errors:  # a failed request is a gap in the evidence, shown, never a crash
            console.print(f"{cell}: {len(ev.errors)} requests failed (first: {ev.errors[0]})", style="yellow")
    code = exit_code(verdicts)
    console.print({0: "equivalent", 1: "DIFFERENT", 2: "not enough evidence"}[code])
    sys.exit(code)


async def _collect(
    targets: list[Target], catalog: EquivalenceCatalog, budget_tokens: int
) -> dict[str, CellEvidence]:
    async with httpx.AsyncClient() as client:
        return await collect(targets, catalog, budget_tokens, client)


def _compare(
    target: Target, cell: CellEvidence, peers: list[CellEvidence], alpha: float, rng: np.random.Generator
) -> list[tuple[str, Comparison]]:
    supported = target.spec.equivalence_tests()
    out: list[tuple[str, Comparison]] = []
    if "forced" in supported:
        out.append(("forced", compare_forced(cell.forced, [p.forced for p in peers], alpha)))
    if "greedy" in supported:
        out.append(("greedy", compare_greedy(cell.greedy, [p.greedy for p in peers], alpha)))
    if "sampled" in supported:
        out.append(("sampled", compare_sampled(cell.sampled, [p.sampled for p in peers], alpha, rng)))
    return out


def _number(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}g}"


STYLE: dict[Verdict, str] = {"equivalent": "green", "different": "bold red", "inconclusive": "yellow"}


def _table(rows: list[tuple[str, int, str, Comparison, CellEvidence]]) -> Table:
    table = Table(title="equivalence against peers")
    for column in (
        "cell",
        "peers",
        "test",
        "statistic",
        "effect [CI]",
        "tolerance",
        "p-value",
        "n",
        "tokens",
        "verdict",
    ):
        table.add_column(column)
    for cell, peers, test, c, ev in rows:
        effect = _number(c.effect) + (
            "" if math.isnan(c.ci_low) else f" [{_number(c.ci_low)}, {_number(c.ci_high)}]"
        )
        table.add_row(
            cell,
            str(peers),
            test,
            c.statistic,
            effect,
            _number(c.tolerance),
            f"{c.p_value:.2g}",
            str(c.n),
            f"{ev.tokens:,}",
            f"[{STYLE[c.verdict]}]{c.verdict}[/]",
        )
    return table
