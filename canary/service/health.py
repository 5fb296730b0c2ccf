"""Which cells are sick, and in what order on-call reads them: the status page's pure half.

The rule is ``v_cell_health``'s (migration 0003), so the page and the Grafana overview agree
(a test compares them on one database): each metric's last 15 minutes against the same cell's
24 whole hours before them, a baseline floored at 0.5 %; ``sick`` needs at least 3 failures
and a one-sided z of 4, ``warn`` 2 failures and z 2.5. Open alerts from detection override it
(firing -> sick, pending -> at least warn); a cell with no scores in 15 minutes and no alert
has ``nodata``. Here the rule takes ``now`` as an argument, where the view reads the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby

RECENT = timedelta(minutes=15)
BASELINE_HOURS = 24
SPARK_HOURS = 24
P0_FLOOR = 0.005
SEVERITY_STATUS = {2: "sick", 1: "warn", 0: "ok", -1: "nodata"}
STATUS_ORDER = {"sick": 0, "warn": 1, "nodata": 2, "ok": 3}


@dataclass(slots=True)
class MetricCounts:
    """One metric of one cell, from the rollups: the recent window and the baseline.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, and the page
    builds 5,000 of these per render at 1,000 cells.
    """

    metric: str
    recent_runs: int
    recent_failures: int
    baseline_runs: int
    baseline_failures: int

    severity: int | None = field(init=False)  # 2 sick, 1 warn, 0 ok; None without recent scores

    def __post_init__(self) -> None:
        self.severity = metric_severity(self.recent_runs, self.recent_failures, self.baseline_rate)

    @property
    def recent_rate(self) -> float | None:
        return self.recent_failures / self.recent_runs if self.recent_runs else None

    @property
    def baseline_rate(self) -> float:
        return self.baseline_failures / self.baseline_runs if self.baseline_runs else 0.0


def metric_severity(runs: int, failures: int, baseline_rate: float) -> int | None:
    """2 (sick), 1 (warn) or 0 (ok) for ``failures`` of ``runs`` recent scores; ``None`` without any."""
    if runs <= 0:
        return None
    if failures < 2:  # neither level is reachable: skip the arithmetic (most metrics, most of the time)
        return 0
    p0 = (
        P0_FLOOR
        if baseline_rate < P0_FLOOR
        else 1.0 - P0_FLOOR
        if baseline_rate > 1.0 - P0_FLOOR
        else baseline_rate
    )
    z = (failures - runs * p0) / math.sqrt(runs * p0 * (1.0 - p0))
    if failures >= 3 and z >= 4:
        return 2
    if z >= 2.5:
        return 1
    return 0


@dataclass(frozen=True)
class OpenAlert:
    """A pending or firing alert with its one-line evidence and the API page that holds the rest."""

    cell: str
    metric: str
    state: str
    started_at: datetime
    summary: str
    evidence: str
    link: str


@dataclass(frozen=True)
class CellHealth:
    """One cell as the page shows it."""

    target_id: int
    cell: str
    model: str
    platform: str
    pool: str
    status: str
    worst_metric: str | None
    recent_rate: float | None
    baseline_rate: float | None
    metrics: tuple[MetricCounts, ...]
    alerts: tuple[OpenAlert, ...] = ()

    @property
    def unhealthy(self) -> bool:
        return self.status != "ok"


def judge(
    target_id: int,
    cell: str,
    model: str,
    platform: str,
    pool: str,
    metrics: Sequence[MetricCounts],
    alerts: Sequence[OpenAlert],
) -> CellHealth:
    """The cell's status and worst metric, by the rule in the module docstring."""
    judged = [(m.severity, m) for m in metrics]
    rated = [(s, m) for s, m in judged if s is not None]
    worst = None
    if rated:
        # Worst severity, then the largest rise over the baseline, then the name (as the view).
        worst = min(
            rated, key=lambda sm: (-sm[0], -((sm[1].recent_rate or 0.0) - sm[1].baseline_rate), sm[1].metric)
        )
    alert_severity = max((2 if a.state == "firing" else 1 for a in alerts), default=-1)
    metric_severity = worst[0] if worst else -1
    severity = max(alert_severity, metric_severity)
    by_alert = max(alert_severity, 0) > max(metric_severity, 0)
    if by_alert:
        first = sorted(alerts, key=lambda a: (a.state != "firing", a.started_at))[0]
        worst_metric, recent, baseline = first.metric, None, None
    elif worst is not None:
        worst_metric, recent, baseline = worst[1].metric, worst[1].recent_rate, worst[1].baseline_rate
    else:
        worst_metric, recent, baseline = None, None, None
    # Metrics as the card lists them: the worst first, then by name.
    ordered = sorted(metrics, key=lambda m: (m.metric != worst_metric, -(m.severity or 0), m.metric))
    return CellHealth(
        target_id, cell, model, platform, pool, SEVERITY_STATUS[severity], worst_metric, recent, baseline,
        tuple(ordered), tuple(alerts),
    )  # fmt: skip


def attention_order(cells: Iterable[CellHealth]) -> list[CellHealth]:
    """Unhealthy cells, sick first, then warnings, then silent ones; most alerts first, then by name."""
    return sorted(
        (c for c in cells if c.unhealthy), key=lambda c: (STATUS_ORDER[c.status], -len(c.alerts), c.cell)
    )


@dataclass
class Group:
    """The cells of one model on one platform, one per pool."""

    model: str
    platform: str
    cells: list[CellHealth] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return status_counts(self.cells)

    @property
    def worst(self) -> str:
        return min((c.status for c in self.cells), key=STATUS_ORDER.__getitem__, default="ok")


def groups(cells: Iterable[CellHealth]) -> list[Group]:
    """Cells by (model, platform), pools sorted; groups with the worst cells first, then by name."""
    ordered = sorted(cells, key=lambda c: (c.model, c.platform, c.pool))
    out = [
        Group(model, platform, list(members))
        for (model, platform), members in groupby(ordered, key=lambda c: (c.model, c.platform))
    ]
    return sorted(out, key=lambda g: (STATUS_ORDER[g.worst], -g.counts["sick"], g.model, g.platform))


def status_counts(cells: Iterable[CellHealth]) -> dict[str, int]:
    out = dict.fromkeys(STATUS_ORDER, 0)
    for c in cells:
        out[c.status] += 1
    return out


def windows(now: datetime) -> tuple[datetime, datetime, datetime, datetime]:
    """(recent_since, baseline_lo, baseline_hi, spark_lo) at ``now``.

    The baseline is the 24 whole hours before the hour holding ``now - RECENT``; the sparkline
    shows the SPARK_HOURS hours ending with the current one, starting at ``spark_lo``.
    """
    now = now.astimezone(UTC)
    recent_since = now - RECENT
    baseline_hi = recent_since.replace(minute=0, second=0, microsecond=0)
    baseline_lo = baseline_hi - timedelta(hours=BASELINE_HOURS)
    spark_lo = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=SPARK_HOURS - 1)
    return recent_since, baseline_lo, baseline_hi, spark_lo
