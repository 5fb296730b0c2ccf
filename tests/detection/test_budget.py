"""The false-alarm budget holds over time on healthy cells, simulated as the product sees them.

The simulation (``bench/_detection_sim.py``) feeds the product's own detection chain: 10 probe
versions per cell at healthy rates from 0 % to 100 %, 3 metrics, 5 repeats per probe and pass
(failing together, or each on its own), half the probes changing version halfway, one pass
every 5 minutes, over 1,000 cell-days per case.
"""

from __future__ import annotations

import math

import pytest

from bench._detection_sim import healthy_fleet
from canary.config.sections import DetectionSpec


@pytest.mark.parametrize("clustered", [True, False], ids=["clustered", "independent"])
@pytest.mark.parametrize("budget", [1.0, 1000.0])
def test_healthy_cells_stay_within_the_false_alarm_budget(clustered: bool, budget: float) -> None:
    spec = DetectionSpec(false_alarms_per_cell_year=budget)
    result = healthy_fleet(cells=50, days=20, clustered=clustered, spec=spec, seed=20250829)
    assert result.cell_days >= 1000
    # Poisson upper bound on what the budget allows, 3 sigma of Monte Carlo error.
    limit = result.allowed + 3 * math.sqrt(result.allowed)
    assert result.false_incidents <= limit, (result, limit)
