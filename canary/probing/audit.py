"""The evidence of ``canary compare``: the equivalence probes, sent now to every selected cell.

Per cell, for each test its target supports (``equivalence`` in its ``[[targets]]`` table):

- ``forced``: each forced probe's text (prompt + continuation) sent with ``echo`` and
  ``logprobs``, in rounds until the cell has spent its share of ``budget_tokens``; every cell
  gets the same rounds, so the comparison pairs the same tokens;
- ``greedy``: each greedy probe at temperature 0, ``GREEDY_PASSES`` times;
- ``sampled``: each sampled probe ``samples`` times at its temperature.

A failed request is a gap in the evidence (its key is missing and its error is kept), never a
crash. Tokens spent are the usage the server reports (input and output), else a four-characters
-a-token estimate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from canary.config.loader import Target
from canary.probing.completion import Completion, Message, ProbeRequest
from canary.probing.equivalence import EquivalenceCatalog, ForcedProbe
from canary.probing.providers import get_provider
from canary.stats.audit import continuation_span

GREEDY_PASSES = 2
FORCED_MAX_ROUNDS = 50


@dataclass
class CellEvidence:
    """What one cell answered: forced log-probabilities per (probe, round), texts per probe."""

    forced: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    greedy: dict[str, list[str]] = field(default_factory=dict)
    sampled: dict[str, list[str]] = field(default_factory=dict)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)


def continuation_logprobs(completion: Completion, probe: ForcedProbe) -> list[float] | None:
    """The log-probabilities of the continuation's tokens in an echoed answer (None if it has none)."""
    if not completion.tokens:
        return None
    pieces = [(t.token, t.logprob) for t in completion.tokens]
    return continuation_span(pieces, len(probe.prompt), len(probe.text))


def _spent(completion: Completion, sent: str) -> int:
    if completion.input_tokens is not None or completion.output_tokens is not None:
        return (completion.input_tokens or 0) + (completion.output_tokens or 0)
    return (len(sent) + len(completion.text)) // 4


class Collector:
    """Sends the probes of one ``canary compare`` and files the answers by cell."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        catalog: EquivalenceCatalog,
        concurrency: int = 8,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.gate = asyncio.Semaphore(concurrency)
        self.on_request = on_request or (lambda: None)

    async def _send(
        self, target: Target, request: ProbeRequest, evidence: CellEvidence, sent: str
    ) -> Completion:
        async with self.gate:
            completion = await get_provider(target.spec.provider, self.client).complete(target, request)
        self.on_request()
        evidence.tokens += _spent(completion, sent)
        if not completion.ok:
            evidence.errors.append(f"{completion.reason}: {completion.error}")
        return completion

    async def forced_round(self, target: Target, evidence: CellEvidence, round_: int) -> None:
        async def one(probe: ForcedProbe) -> None:
            request = ProbeRequest(
                mode="completion", prompt=probe.text, max_tokens=1, temperature=0.0, echo=True
            )
            completion = await self._send(target, request, evidence, probe.text)
            scored = continuation_logprobs(completion, probe) if completion.ok else None
            if scored is not None:
                evidence.forced[(probe.id, round_)] = scored
            elif completion.ok:
                evidence.errors.append(f"{probe.id}: the answer carried no prompt log-probabilities")

        await asyncio.gather(*(one(p) for p in self.catalog.forced))

    async def texts(self, target: Target, evidence: CellEvidence, test: str) -> None:
        """The greedy probes (temperature 0, ``GREEDY_PASSES`` each) or the sampled (``samples`` each)."""
        plan: list[tuple[str, str, int, float, int]] = (
            [(p.id, p.prompt, p.max_tokens, 0.0, GREEDY_PASSES) for p in self.catalog.greedy]
            if test == "greedy"
            else [(p.id, p.prompt, p.max_tokens, p.temperature, p.samples) for p in self.catalog.sampled]
        )
        store = evidence.greedy if test == "greedy" else evidence.sampled

        async def one(probe_id: str, prompt: str, max_tokens: int, temperature: float) -> None:
            request = ProbeRequest(
                mode="chat",
                messages=(Message("user", prompt),),
                max_tokens=max_tokens,
                temperature=temperature,
            )
            completion = await self._send(target, request, evidence, prompt)
            if completion.ok:
                store.setdefault(probe_id, []).append(completion.text)

        await asyncio.gather(*(one(i, p, m, t) for i, p, m, t, repeats in plan for _ in range(repeats)))


async def collect(
    targets: list[Target],
    catalog: EquivalenceCatalog,
    budget_tokens: int,
    client: httpx.AsyncClient,
    on_request: Callable[[], None] | None = None,
) -> dict[str, CellEvidence]:
    """Every selected cell's evidence, by cell name.

    1. The greedy and sampled probes, once, on the cells that support them.
    2. Forced rounds on the cells that support ``forced``, all cells together, until the next
       round would take the most spent cell past ``budget_tokens`` (at least one round, at most
       ``FORCED_MAX_ROUNDS``).
    """
    collector = Collector(client, catalog, on_request=on_request)
    evidence = {t.cell: CellEvidence() for t in targets}
    jobs = [
        collector.texts(t, evidence[t.cell], test)
        for t in targets
        for test in ("greedy", "sampled")
        if test in t.spec.equivalence_tests()
    ]
    await asyncio.gather(*jobs)
    forced = [t for t in targets if "forced" in t.spec.equivalence_tests()]
    before = {t.cell: evidence[t.cell].tokens for t in forced}
    for round_ in range(FORCED_MAX_ROUNDS if catalog.forced and forced else 0):
        await asyncio.gather(*(collector.forced_round(t, evidence[t.cell], round_) for t in forced))
        per_round = max((evidence[t.cell].tokens - before[t.cell]) / (round_ + 1) for t in forced)
        if max(evidence[t.cell].tokens for t in forced) + per_round > budget_tokens:
            break
    return evidence
