"""What one pass saw: per cell, runs, failures by reason, scores by metric, latencies."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from canary.storage.writes import RunResult


@dataclass
class CellSummary:
    """What one pass saw on one cell."""

    cell: str
    runs: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    metric_passed: Counter[str] = field(default_factory=Counter)
    metric_total: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    scoring_errors: Counter[str] = field(default_factory=Counter)  # scorer -> runs it raised on

    def add(self, result: RunResult) -> None:
        self.runs += 1
        c = result.completion
        if c.ok:
            self.ok += 1
            self.latencies_ms.append(c.latency_s * 1000.0)
        else:
            self.failures[c.reason.value if c.reason else "unknown"] += 1
        for s in result.scores:
            self.metric_total[s.metric] += 1
            self.metric_passed[s.metric] += int(s.passed)

    def pass_rate(self, metric: str) -> float | None:
        total = self.metric_total[metric]
        return self.metric_passed[metric] / total if total else None


@dataclass
class PassSummary:
    pass_id: uuid.UUID
    cells: dict[str, CellSummary]
    duration_s: float = 0.0

    @property
    def stored(self) -> int:
        return sum(c.runs for c in self.cells.values())

    @property
    def failed_runs(self) -> int:
        return sum(c.runs - c.ok for c in self.cells.values())

    @property
    def metrics(self) -> list[str]:
        return sorted({m for c in self.cells.values() for m in c.metric_total})
