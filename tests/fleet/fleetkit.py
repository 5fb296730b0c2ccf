"""Helpers for the fleet tests: probe cells through canary's real providers and score them."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from canary.config.loader import Target, build_config
from canary.fleet import fleet_targets
from canary.fleet.running import RunningFleet
from canary.probing.catalog import Catalog, Probe
from canary.probing.providers import get_provider
from canary.scoring import ScoringContext, score_completion


@dataclass
class PassResult:
    """Pass/fail outcomes per (cell, metric), and the completions behind them."""

    outcomes: dict[tuple[str, str], list[bool]] = field(default_factory=lambda: defaultdict(list))
    served_pools: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    texts: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))

    def failure_rate(self, cell: str, metric: str) -> float:
        results = self.outcomes.get((cell, metric), [])
        return sum(not ok for ok in results) / len(results) if results else 0.0

    def count(self, cell: str, metric: str) -> int:
        return len(self.outcomes.get((cell, metric), []))

    def metrics(self, cell: str) -> set[str]:
        return {metric for (c, metric) in self.outcomes if c == cell}


def targets_for(fleet: RunningFleet, cells: list[str], provider: str = "openai-chat") -> list[Target]:
    """Canary targets for the named cells (``model/platform/pool``; pool ``front-door`` allowed)."""
    tables = fleet_targets(fleet.config, fleet.base_url, provider=provider)
    config = build_config({"targets": tables}, "<fleet-tests>")
    chosen = [t for t in config.targets if t.cell in cells]
    assert len(chosen) == len(cells), f"unknown cells among {cells}"
    return chosen


async def probe_cells_async(
    targets: list[Target], probes: list[Probe], repeat: int, sessions: str, references: dict[str, str]
) -> PassResult:
    result = PassResult()
    async with httpx.AsyncClient() as client:
        gate = asyncio.Semaphore(32)

        async def one(target: Target, probe: Probe, k: int) -> None:
            provider = get_provider(target.spec.provider, client)
            request = probe.request("chat", session_key=f"{sessions}-{probe.id}-{k}")
            async with gate:
                completion = await provider.complete(target, request)
            assert completion.ok, completion.error
            served = completion.served_by.get("x-served-pool")
            context = ScoringContext(
                reference_text=references.get(f"{target.spec.model}/{probe.id}"),
                expected_pool=target.spec.expected_pool,
                served_pool=served,
            )
            result.served_pools[target.cell].append(served or "")
            result.texts[(target.cell, probe.id)].append(completion.text)
            for score in score_completion(probe, completion, context):
                result.outcomes[(target.cell, score.metric)].append(score.passed)

        await asyncio.gather(*(one(t, p, k) for t in targets for p in probes for k in range(repeat)))
    return result


ProbeCells = Callable[..., PassResult]


def select(catalog: Catalog, *, sets: tuple[str, ...] = (), scorer: str | None = None) -> list[Probe]:
    """Catalog probes from some sets or with some scorer, skipping the 100k-token haystacks."""
    return [
        p
        for p in catalog.probes
        if (not sets or p.probe_set in sets)
        and (scorer is None or scorer in p.spec.scorers)
        and (p.spec.context_tokens or 0) <= 10_000
    ]


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "canary-small", "messages": [{"role": "user", "content": prompt}], **extra}
