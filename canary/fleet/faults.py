"""Run-time fault state and the front-door router.

:class:`FaultState` holds the current :class:`~canary.fleet.config.FaultSpec` per (fault,
platform, pool). It is changed by ``POST /admin/faults`` and by scenarios while requests are
being served, so readers take a snapshot (a dict replaced whole under a lock, never mutated).

:func:`route` is a platform's front door: requests that fit the default (short-context) pool
go there, longer ones to the long-context pool, and under a ``misroute`` fault a fraction of
the short ones go to the wrong pool. The draw is a hash of the session key, so a session that
is misrouted once is misrouted every time (and stays misrouted as the fraction grows), the
stickiness the postmortem describes; without a session key each request draws afresh.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from canary.fleet.config import FaultKind, FaultSpec, FleetConfig, PlatformSpec, PoolSpec, check_fault
from canary.fleet.model import AnswerPlan, RowFaults
from canary.fleet.perturb import Perturbation, pool_key

SUBTLE_FAULTS: tuple[FaultKind, ...] = ("quantize", "kv_quant", "context_config")
FOLLOW_UP_RATE = 0.03
"""After its first corrupt token or confused step, a request gets more at this rate per step."""
LONG_CONTEXT_DEGRADE_FACTOR = 1.5
"""Needle probes lose their way more often when misrouted (worse recall)."""


def unit_hash(*parts: str) -> float:
    """A uniform number in [0, 1) fixed by ``parts``."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class FaultState:
    """The fleet's current faults, safe to read from the engine while the admin API writes."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, str, str], FaultSpec] = {f.key: f for f in config.faults}
        self.served: Counter[str] = Counter()  # "platform/pool/replica" -> requests
        self.misrouted: Counter[str] = Counter()  # platform -> requests the router misrouted

    def set(self, spec: FaultSpec) -> None:
        """Install or replace a fault setting (ValueError if it names what the fleet lacks)."""
        check_fault(self.config, spec)
        with self._lock:
            self._faults = {**self._faults, spec.key: spec}

    def clear(self) -> None:
        with self._lock:
            self._faults = {}

    def snapshot(self) -> list[FaultSpec]:
        return list(self._faults.values())

    def active(self, fault: FaultKind, platform: str, pool: str | None, model: str) -> FaultSpec | None:
        """The enabled setting of ``fault`` that applies here, if any."""
        spec = self._faults.get((fault, platform, pool or ""))
        return spec if spec is not None and spec.applies_to(model) else None


@dataclass(frozen=True)
class Route:
    pool: PoolSpec
    replica: int  # 1-based, as in the x-served-replica header "short-context-2"
    misrouted: bool = False

    def replica_name(self) -> str:
        return f"{self.pool.name}-{self.replica}"


def pick_replica(pool: PoolSpec, platform: str, session_key: str | None, rng: np.random.Generator) -> int:
    if session_key:
        return 1 + int(unit_hash("replica", platform, pool.name, session_key) * pool.replicas)
    return 1 + int(rng.integers(pool.replicas))


def route(
    state: FaultState,
    platform: PlatformSpec,
    model: str,
    prompt_tokens: int,
    session_key: str | None,
    rng: np.random.Generator,
) -> Route:
    """The front door's choice of pool and replica for one request."""
    short, long = platform.short_pool, platform.long_pool
    if prompt_tokens > short.context_window:
        return Route(long, pick_replica(long, platform.name, session_key, rng))
    fault = state.active("misroute", platform.name, None, model)
    if fault is not None and fault.fraction > 0:
        draw = unit_hash("misroute", platform.name, session_key) if session_key else float(rng.random())
        if draw < fault.fraction:
            target = platform.pool(fault.pool or "") or long
            if target.name != short.name:
                return Route(target, pick_replica(target, platform.name, session_key, rng), misrouted=True)
    return Route(short, pick_replica(short, platform.name, session_key, rng))


def _episode_steps(horizon: int, rng: np.random.Generator, first: int | None = None) -> frozenset[int]:
    """A first step (uniform within the answer unless given), then follow-ups at :data:`FOLLOW_UP_RATE`."""
    first = int(rng.integers(horizon)) if first is None else first
    later = np.flatnonzero(rng.random(horizon * 2) < FOLLOW_UP_RATE) + first + 1
    return frozenset([first, *later.tolist()])


def row_faults(
    state: FaultState,
    platform: str,
    route_: Route,
    model: str,
    plan: AnswerPlan,
    rng: np.random.Generator,
    offset: int = 0,
) -> RowFaults:
    """How the active faults touch one request served by ``route_``.

    1. A misrouted request has flatter logits, and with probability ``intensity`` (higher for
       needle probes) it loses its way: at a random step within the answer an alternative
       overtakes the reference, and more such steps follow at a low rate.
    2. Under ``corrupt``, a request is hit with probability ``intensity``: its first corrupt
       token lands at a random step within the answer, later ones follow at a low rate.
    3. Under ``topk_drop``, the engine drops the argmax at the configured batch sizes.
    4. Under ``quantize``, ``kv_quant`` or ``context_config``, every logit gets the pool's fixed
       perturbation; ``offset`` is the prompt's length in tokens (the KV cache holds it too).
    """
    faults = RowFaults(rng=rng)
    horizon = max(len(plan.ref) - 1, 1)  # the answer's tokens, EOS excluded
    if route_.misrouted:
        misroute = state.active("misroute", platform, None, model)
        faults.degrade = misroute.intensity if misroute else 0.5
        chance = faults.degrade * (LONG_CONTEXT_DEGRADE_FACTOR if plan.long_context else 1.0)
        if rng.random() < chance:
            # A wrong word or digit, not a stray comma: that is what loses an answer or a needle.
            first = int(rng.choice(plan.content)) if len(plan.content) else None
            faults.confused_steps = _episode_steps(horizon, rng, first)
    corrupt = state.active("corrupt", platform, route_.pool.name, model)
    if corrupt is not None and rng.random() < corrupt.intensity:
        faults.corrupt_steps = _episode_steps(horizon, rng)
    drop = state.active("topk_drop", platform, route_.pool.name, model)
    if drop is not None:
        faults.drop_rate = drop.intensity
        faults.drop_batch_sizes = drop.batch_sizes
    subtle = {
        kind: spec.intensity
        for kind in SUBTLE_FAULTS
        if (spec := state.active(kind, platform, route_.pool.name, model)) is not None
    }
    if any(subtle.values()):
        faults.perturb = Perturbation(
            key=pool_key(platform, route_.pool.name, model),
            quantize=subtle.get("quantize", 0.0),
            kv_quant=subtle.get("kv_quant", 0.0),
            context=subtle.get("context_config", 0.0),
            offset=offset,
        )
    return faults
