"""One reference fleet on loopback for the whole session, and a helper that probes cells with it.

Fault tests install faults on the shared fleet; the ``fleet`` fixture clears them after each
test so no test sees another's faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fleetkit import PassResult, ProbeCells, probe_cells_async, targets_for

from canary.fleet import default_fleet_config
from canary.fleet.running import RunningFleet, run_fleet_in_thread
from canary.probing.catalog import Catalog, Probe, load_catalog


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def running_fleet(catalog: Catalog) -> Iterator[RunningFleet]:
    with run_fleet_in_thread(default_fleet_config(), catalog=catalog) as fleet:
        yield fleet


@pytest.fixture
def fleet(running_fleet: RunningFleet) -> Iterator[RunningFleet]:
    running_fleet.clear_faults()
    yield running_fleet
    running_fleet.clear_faults()


@pytest.fixture
def probe_cells(fleet: RunningFleet) -> ProbeCells:
    """``probe_cells(cells, probes, repeat=1, sessions="s", references={})`` -> PassResult."""

    def run(
        cells: list[str],
        probes: list[Probe],
        repeat: int = 1,
        sessions: str = "s",
        references: dict[str, str] | None = None,
        provider: str = "openai-chat",
    ) -> PassResult:
        targets = targets_for(fleet, cells, provider)
        return asyncio.run(probe_cells_async(targets, probes, repeat, sessions, references or {}))

    return run
