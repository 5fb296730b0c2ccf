"""Terminal output for passes: the per-cell summary table."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from canary.probing.runner import PassSummary


def pass_table(summary: PassSummary) -> Table:
    """One row per cell: runs, failures by reason, latency and each metric's pass rate."""
    metrics = summary.metrics
    table = Table(title=f"pass {summary.pass_id} — {summary.stored} runs in {summary.duration_s:.1f}s")
    table.add_column("cell")
    table.add_column("runs", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("p50 ms", justify="right")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name in sorted(summary.cells):
        cell = summary.cells[name]
        failed = ", ".join(f"{reason}:{n}" for reason, n in cell.failures.most_common()) or "0"
        p50 = f"{statistics.median(cell.latencies_ms):.0f}" if cell.latencies_ms else "-"
        rates = []
        for metric in metrics:
            rate = cell.pass_rate(metric)
            rates.append("-" if rate is None else f"{rate:.0%} ({cell.metric_total[metric]})")
        table.add_row(name, str(cell.runs), failed, p50, *rates)
    return table


def wide_console() -> Console:
    """A console that does not squeeze the table to 80 columns when output is piped."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


def print_pass(summary: PassSummary, console: Console | None = None) -> None:
    (console or wide_console()).print(pass_table(summary))
