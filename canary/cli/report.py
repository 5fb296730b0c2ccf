"""Output for passes: the per-cell summary as a table, plain lines or JSON (:mod:`canary.cli.output`)."""

from __future__ import annotations

import statistics
from typing import Any

from rich.table import Table

from canary.cli.output import OutputFormat, emit
from canary.probing.summary import PassSummary


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


def pass_data(summary: PassSummary) -> dict[str, Any]:
    """The pass as JSON-ready data: per cell, runs, failures by reason, p50 latency and each metric."""
    cells = []
    for name in sorted(summary.cells):
        cell = summary.cells[name]
        metrics = {
            m: {"passed": cell.metric_passed[m], "total": cell.metric_total[m]} for m in cell.metric_total
        }
        cells.append(
            {
                "cell": name,
                "runs": cell.runs,
                "ok": cell.ok,
                "failures": dict(cell.failures),
                "p50_ms": statistics.median(cell.latencies_ms) if cell.latencies_ms else None,
                "metrics": metrics,
            }
        )
    return {
        "pass_id": str(summary.pass_id),
        "runs": summary.stored,
        "failed_runs": summary.failed_runs,
        "duration_s": summary.duration_s,
        "cells": cells,
    }


def print_pass(summary: PassSummary, output_format: OutputFormat = "table") -> None:
    emit(output_format, pass_table(summary), pass_data(summary) if output_format == "json" else None)
