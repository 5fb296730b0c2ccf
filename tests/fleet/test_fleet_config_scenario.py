"""Fleet configuration, targets for canary.toml, the admin API and scenario time lines."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from canary.config.loader import build_config
from canary.errors import ConfigError
from canary.fleet import (
    FleetConfig,
    ManualClock,
    ScenarioRunner,
    default_fleet_config,
    fleet_targets,
    load_fleet_config,
    load_scenario,
)
from canary.fleet.cli import fleet_command
from canary.fleet.faults import FaultState
from canary.fleet.running import RunningFleet

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_fleet_has_twelve_cells_and_six_front_doors_that_canary_accepts() -> None:
    config = default_fleet_config()
    pools = fleet_targets(config, "http://127.0.0.1:1", front_doors=False)
    assert len(pools) == 12
    targets = build_config({"targets": fleet_targets(config, "http://127.0.0.1:1")}, "<t>").targets
    assert len(targets) == 18
    door = next(t for t in targets if t.cell == "canary-small/cloud-a/front-door")
    assert door.spec.base_url == "http://127.0.0.1:1/cloud-a/v1"
    assert door.spec.expected_pool == "short-context"
    assert door.spec.served_by_headers == ("x-served-pool", "x-served-replica")
    [anthropic] = [
        t for t in fleet_targets(config, "http://h:1", provider="anthropic") if t["pool"] == "long-context"
    ][:1]
    assert anthropic["base_url"] == "http://h:1/first-party/long-context"


def test_the_example_fleet_file_loads() -> None:
    config = load_fleet_config(ROOT / "examples" / "fleet.toml")
    assert isinstance(config, FleetConfig)
    assert (
        config.platform("cloud-b") is not None
        and config.platform("cloud-b").pool("short-context").top_k == 64
    )  # type: ignore[union-attr]


def test_config_errors_name_the_file_the_key_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text(
        '[[models]]\nname = "m"\n[[platforms]]\nname = "p"\n[[platforms.pools]]\nname = "a"\nreplica = 3\n'
    )
    with pytest.raises(ConfigError) as err:
        load_fleet_config(bad)
    assert err.value.path == str(bad) and err.value.key == "platforms[0].pools[0].replica"
    assert "unknown key" in err.value.problem
    bad.write_text('[[faults]]\nfault = "corrupt"\nplatform = "mars"\npool = "short-context"\n')
    with pytest.raises(ConfigError) as err:
        load_fleet_config(bad)
    assert err.value.key == "faults[0]" and "mars" in err.value.problem


def test_admin_api_installs_reports_and_rejects_faults(fleet: RunningFleet) -> None:
    base = fleet.base_url
    fault = {"fault": "corrupt", "platform": "cloud-a", "pool": "short-context", "intensity": 0.3}
    assert httpx.post(f"{base}/admin/faults", json=fault).status_code == 200
    state = httpx.get(f"{base}/admin/state").json()
    assert [(f["fault"], f["intensity"]) for f in state["faults"]] == [("corrupt", 0.3)]
    assert httpx.post(f"{base}/admin/faults", json={**fault, "pool": "nope"}).status_code == 400
    assert httpx.post(f"{base}/admin/faults", json={**fault, "intensity": 2}).status_code == 400
    assert httpx.delete(f"{base}/admin/faults").json()["faults"] == []


def test_the_postmortem_scenario_replays_the_incident_in_order() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "postmortem.toml")
    clock = ManualClock(seconds_per_day=60.0, start=1_000.0)
    state = FaultState(default_fleet_config())
    runner = ScenarioRunner(scenario, state, clock)
    assert runner.step() == []
    clock.advance(5)
    runner.step()
    misroute = state.active("misroute", "first-party", None, "canary-small")
    assert misroute is not None and misroute.fraction == 0.008
    assert state.active("misroute", "cloud-a", None, "canary-small") is None  # from Aug 12
    assert state.active("corrupt", "first-party", "short-context", "canary-small") is None
    clock.advance(20)  # day 25, Aug 26: corruption and top-k on the own API only
    runner.step()
    for fault in ("corrupt", "topk_drop"):
        for platform in ("cloud-a", "cloud-b"):
            for pool in ("short-context", "long-context"):
                assert state.active(fault, platform, pool, "canary-small") is None  # type: ignore[arg-type]
    assert state.active("corrupt", "first-party", "short-context", "canary-large") is not None
    assert state.active("misroute", "cloud-a", None, "canary-small") is not None
    assert state.active("misroute", "cloud-b", None, "canary-small") is None  # from Aug 27
    clock.advance(6)  # day 31: after the load-balancer change, before the corruption rollback
    runner.step()
    assert state.active("misroute", "first-party", None, "canary-large").fraction == 0.16  # type: ignore[union-attr]
    assert state.active("corrupt", "first-party", "short-context", "canary-large") is None  # ended Aug 28
    assert state.active("corrupt", "first-party", "short-context", "canary-small") is not None
    assert state.active("topk_drop", "first-party", "short-context", "canary-small") is not None
    assert state.active("topk_drop", "first-party", "short-context", "canary-large") is None
    clock.advance(16)  # day 47, Sep 17: fixed on first-party and cloud-b, not yet on cloud-a
    runner.step()
    assert state.active("misroute", "first-party", None, "canary-small") is None
    assert state.active("misroute", "cloud-b", None, "canary-small") is None
    assert state.active("misroute", "cloud-a", None, "canary-small") is not None
    clock.advance(4)
    runner.step()
    assert runner.finished and state.snapshot() and not any(f.enabled for f in state.snapshot())
    onsets = {(o.fault, o.platform, o.pool): o for o in runner.onsets()}
    corrupt = onsets[("corrupt", "first-party", "short-context")]
    assert (corrupt.began_day, corrupt.ended_day) == (24, 32)
    assert onsets[("misroute", "first-party", None)].began_wall == 1_000.0 + 5 * 60.0
    assert onsets[("misroute", "first-party", None)].ended_day == 46
    cloud_a, cloud_b = onsets[("misroute", "cloud-a", None)], onsets[("misroute", "cloud-b", None)]
    assert (cloud_a.began_day, cloud_a.ended_day) == (11, 48)
    assert (cloud_b.began_day, cloud_b.ended_day) == (26, 46)


def test_a_scenario_naming_an_unknown_platform_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "x"\n[[events]]\nday = 1\nfault = "misroute"\nplatform = "mars"\nfraction = 0.1\n'
    )
    with pytest.raises(ConfigError, match="mars"):
        ScenarioRunner(load_scenario(path), FaultState(default_fleet_config()), ManualClock())


def test_the_fleet_command_has_help_and_its_module_does_not_import_jax() -> None:
    result = CliRunner().invoke(fleet_command, ["--help"])
    assert result.exit_code == 0 and "--scenario" in result.output
    code = "import sys, canary.cli, canary.fleet, canary.fleet.cli; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_running_scenario_switches_faults_on_a_compressed_clock_and_reports_its_time_line(
    fleet: RunningFleet, tmp_path: Path
) -> None:
    path = tmp_path / "quick.toml"
    event = '[[events]]\nfault = "corrupt"\nplatform = "cloud-b"\npool = "short-context"\n'
    on, off = f"{event}day = 1\nintensity = 0.5\n", f"{event}day = 2\nenabled = false\n"
    path.write_text(f'name = "quick"\ndays = 3\n{on}{off}')
    started = time.time()
    runner = fleet.start_scenario(load_scenario(path), seconds_per_day=0.2)
    try:
        deadline = time.time() + 10
        while not runner.finished and time.time() < deadline:
            time.sleep(0.05)
        state = httpx.get(f"{fleet.base_url}/admin/state").json()
    finally:
        runner.stop()
        fleet.fleet.scenario = None
    assert [e["enabled"] for e in state["scenario"]["timeline"]] == [True, False]
    [onset] = runner.onsets()
    assert (onset.fault, onset.began_day, onset.ended_day) == ("corrupt", 1, 2)
    assert started + 0.15 <= onset.began_wall <= started + 2.0
