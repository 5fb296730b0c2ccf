"""`canary demo` on a fleet with no faults: 100,000 runs, detection after every pass, no finding.

The demo's own code (:func:`canary.fleet.demo.run_demo`) replays ``scenarios/healthy.toml``
cut into enough passes for 100,000 runs over all 18 cells. Every finding of any kind (self,
peer, invariant, availability, no data) would be a false alarm.

Cost: the reference fleet, not the canary, sets the pace: it answers ~150-200 short requests a
second on two cores and shares them with the canary, PostgreSQL and the detection rounds. Measured
on two shared cores: 309 passes, 100,116 runs in 1,163 s (~19 min, ~90 runs/s end to end). The
probes are the cheapest per run (answers of a few tokens) that still exercise the scorers every
cell runs (known answers, unexpected script, routing, answered); the demo's default set (prose,
code, temperature-0 repeats with logprobs) runs ~55 runs/s, which would take ~30 min.

That is longer than the whole of ``make test``, so it runs with ``make test-long`` (or
``CANARY_LONG_TESTS=1``), not on every CI run.
"""

from __future__ import annotations

import math
import os

import pytest
from rich.console import Console

from canary.fleet import default_fleet_config
from canary.fleet.demo import demo_targets, run_demo
from canary.probing.catalog import load_catalog
from canary.probing.runner import planned_runs
from canary.resources import shipped

RUNS = 100_000
PROBES = "arithmetic,facts"  # 18 short-answer probes: 324 runs a pass over the 18 cells
CONCURRENCY = 4  # per cell; on two cores more in flight only queues in the fleet


def passes_for(runs: int) -> int:
    targets = demo_targets(default_fleet_config(), "http://127.0.0.1:1", CONCURRENCY)
    probes = load_catalog().select(PROBES)
    per_pass = sum(planned_runs(t, probes) for t in targets)
    return math.ceil(runs / per_pass)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CANARY_LONG_TESTS"), reason="~19 min; run with make test-long")
@pytest.mark.timeout(3600)
def test_a_healthy_fleet_yields_no_finding_over_100000_runs(db_url: str) -> None:
    console = Console(record=True, width=200)
    result = run_demo(
        scenario_path=shipped("scenarios") / "healthy.toml",
        passes=passes_for(RUNS),
        probes_pattern=PROBES,
        concurrency=CONCURRENCY,
        database_url=db_url,
        console=console,
    )
    text = console.export_text()
    assert result.runs >= RUNS, text[-2000:]
    assert result.detections == []  # the scenario switches nothing on
    assert result.episodes == {}, [f.message for f in result.episodes.values()][:10]
    assert result.false_alarms == []
    assert f"0 findings over {result.runs:,} runs" in text
    print(f"{result.passes} passes, {result.runs:,} runs in {result.seconds:.0f} s")
