"""`canary demo` end to end on a short scenario: fleet, passes, detection, attribution."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from canary.fleet.demo import run_demo

SCENARIO = """
name = "short"
description = "corruption and misrouting from day 3"
start_date = "2025-08-01"
seconds_per_day = 1.0
days = 6

[[events]]
day = 3
note = "corruption on cloud-a"
fault = "corrupt"
platform = "cloud-a"
pool = "short-context"
intensity = 0.5

[[events]]
day = 3
note = "misrouting on first-party"
fault = "misroute"
platform = "first-party"
fraction = 0.2
intensity = 0.6
"""


def test_the_demo_flags_each_fault_after_it_begins_and_nothing_else(db_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SCENARIO)
    console = Console(record=True, width=200)
    result = run_demo(
        scenario_path=scenario,
        days_per_pass=1.0,
        probes_pattern="prose-en,arithmetic",
        database_url=db_url,
        console=console,
    )
    by_fault = {d.fault: d for d in result.detections}
    assert set(by_fault) == {"corrupt", "misroute"}
    corrupt, misroute = by_fault["corrupt"], by_fault["misroute"]
    assert corrupt.finding is not None and corrupt.flagged_day is not None and corrupt.flagged_day >= 3
    assert corrupt.finding.metric == "unexpected_script" and "/cloud-a/" in corrupt.finding.cell
    assert misroute.finding is not None and misroute.finding.metric == "routing"
    assert misroute.finding.cell.endswith("/first-party/front-door") and misroute.finding.kind == "invariant"
    assert result.false_alarms == []
    text = console.export_text()
    assert "first flagged" in text and "corruption on cloud-a" in text
