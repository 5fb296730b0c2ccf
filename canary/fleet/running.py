"""Run a fleet on loopback in a background thread (for ``canary demo``, tests and benchmarks).

::

    with run_fleet_in_thread(default_fleet_config()) as fleet:
        httpx.post(f"{fleet.base_url}/first-party/v1/chat/completions", json=...)
        fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=0.2)
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from canary.fleet.config import FaultSpec, FleetConfig
from canary.fleet.scenario import Clock, Scenario, ScenarioClock, ScenarioRunner
from canary.fleet.server import Fleet, build_app
from canary.logs import UVICORN_LOG_CONFIG
from canary.probing.catalog import Catalog

STARTUP_TIMEOUT_S = 30.0


class RunningFleet:
    """A fleet serving on ``base_url`` until :meth:`stop` (or the end of a ``with`` block)."""

    def __init__(self, fleet: Fleet, server: uvicorn.Server, thread: threading.Thread, base_url: str) -> None:
        self.fleet = fleet
        self.server = server
        self.thread = thread
        self.base_url = base_url

    @property
    def config(self) -> FleetConfig:
        return self.fleet.config

    def set_fault(self, **fields: Any) -> FaultSpec:
        """Install a fault, as ``POST /admin/faults`` would (ValueError for unknown names)."""
        spec = FaultSpec.model_validate(fields)
        self.fleet.state.set(spec)
        return spec

    def clear_faults(self) -> None:
        self.fleet.state.clear()

    def start_scenario(
        self, scenario: Scenario, clock: Clock | None = None, *, seconds_per_day: float | None = None
    ) -> ScenarioRunner:
        """Replay ``scenario`` against this fleet from now on (a real-time clock unless given).

        With a :class:`~canary.fleet.scenario.ManualClock`, call ``runner.step()`` after each
        ``clock.advance()``; with the default clock a background thread applies the events.
        """
        if clock is None:
            clock = ScenarioClock(seconds_per_day or scenario.seconds_per_day)
        runner = ScenarioRunner(scenario, self.fleet.state, clock)
        self.fleet.scenario = runner
        if isinstance(clock, ScenarioClock):
            runner.start()
        else:
            runner.step()
        return runner

    def stop(self) -> None:
        if self.fleet.scenario is not None:
            self.fleet.scenario.stop()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.fleet.engine.stop()

    def __enter__(self) -> RunningFleet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_fleet_in_thread(
    config: FleetConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    catalog: Catalog | None = None,
    warm_up: bool = False,
) -> RunningFleet:
    """Start the fleet's server on ``host:port`` (0 = any free port) and return once it listens.

    ``catalog`` defaults to the repository's ``probes/``; ``warm_up`` compiles the sampler for
    every batch bucket before returning, so first requests are not slowed by compilation.
    """
    fleet = Fleet(config, catalog)
    fleet.engine.start()
    if warm_up:
        fleet.engine.warm_up()
    uv_config = uvicorn.Config(
        build_app(fleet),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        log_config=UVICORN_LOG_CONFIG,
    )
    server = uvicorn.Server(uv_config)
    thread = threading.Thread(target=server.run, name="fleet-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            fleet.engine.stop()
            raise RuntimeError(f"the fleet's HTTP server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningFleet(fleet, server, thread, f"http://{host}:{bound}")
