"""The reference fleet: a real LLM-serving HTTP API on loopback, with switchable faults.

It is the canary's embedded default target and its test bed. Several platforms, each with
pools of replicas behind a front-door router, serve synthetic models through the OpenAI chat,
OpenAI completions and Anthropic Messages APIs; a JAX sampler picks every token. Faults
(``misroute``, ``corrupt``, ``topk_drop``) reproduce the three bugs of the postmortem and can
be switched at run time or replayed on a compressed time line by a scenario.

Programmatic use (importing this package does not import JAX; the names below that need it
are loaded on first access)::

    from canary.fleet import default_fleet_config, fleet_targets, run_fleet_in_thread

    config = default_fleet_config()            # or load_fleet_config("examples/fleet.toml")
    with run_fleet_in_thread(config) as fleet:  # host="127.0.0.1", port=0 (any free port)
        targets = fleet_targets(config, fleet.base_url)   # [[targets]] dicts for canary.toml
        fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=0.2)
        ...                                     # or POST {base_url}/admin/faults with that JSON

    scenario = load_scenario("scenarios/postmortem.toml")
    with run_fleet_in_thread(config) as fleet:
        runner = fleet.start_scenario(scenario, seconds_per_day=5)  # real-time clock, own thread
        ...
        runner.timeline   # [TimelineEntry(day, wall, event)] of the settings applied so far
        runner.onsets()   # [FaultOnset(fault, platform, pool, began_day, began_wall, ended_…)]

    # Tests drive time themselves: ScenarioRunner(scenario, fleet.fleet.state, ManualClock()),
    # then clock.advance(days) and runner.step().

The fleet's sampler is ``canary.fleet.sampler:sample`` (``sample_approx_topk`` is the faulty
one), so ``canary sampler-check --sampler canary.fleet.sampler:sample`` checks it.

URL layout: a pool is ``{base_url}/{platform}/{pool}``, a platform's front door is
``{base_url}/{platform}``; under each, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/messages`` and ``/v1/models``. Responses carry ``x-served-platform``, ``x-served-pool``
and ``x-served-replica``; the front door keeps a session (``x-session-key``) on one pool.
Admin: ``GET /admin/state``, ``POST /admin/faults`` (a :class:`FaultSpec` as JSON, or a
list), ``DELETE /admin/faults``.

Modules: ``config`` (FleetConfig, fleet_targets; no JAX), ``vocab`` (tokenizer), ``model``
(synthetic models), ``sampler`` (the JAX sampler, healthy and faulty), ``engine`` (continuous
batching), ``faults`` (fault state, router), ``api`` (the three APIs' bodies), ``server``
(HTTP), ``running`` (run in a thread), ``scenario`` (time lines), ``cli`` (``canary fleet``).
"""

from __future__ import annotations

import importlib
from typing import Any

from canary.fleet.config import (
    FaultSpec,
    FleetConfig,
    ModelSpec,
    PlatformSpec,
    PoolSpec,
    default_fleet_config,
    fleet_targets,
    load_fleet_config,
)

_LAZY = {
    "Fleet": "canary.fleet.server",
    "RunningFleet": "canary.fleet.running",
    "run_fleet_in_thread": "canary.fleet.running",
    "Scenario": "canary.fleet.scenario",
    "ScenarioClock": "canary.fleet.scenario",
    "ManualClock": "canary.fleet.scenario",
    "ScenarioRunner": "canary.fleet.scenario",
    "load_scenario": "canary.fleet.scenario",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'canary.fleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FaultSpec",
    "FleetConfig",
    "ModelSpec",
    "PlatformSpec",
    "PoolSpec",
    "default_fleet_config",
    "fleet_targets",
    "load_fleet_config",
    *_LAZY,
]
