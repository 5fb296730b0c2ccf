"""One probe pass: every selected probe on every selected cell -> provider -> scorers -> storage.

Requests run concurrently, bounded per cell by the target's ``concurrency``; results flow
through a memory stream to a single writer that stores them in batches. A failing cell never
stops the pass: every failure is a stored run with its reason. A session probe set runs as
conversations: its turns one after another on one stable session key, each carrying the
conversation so far.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from canary.config.loader import Target
from canary.config.secrets import redact_configured
from canary.errors import FailureReason
from canary.probing.catalog import Probe, select_probes
from canary.probing.cells import Cell, CellPool
from canary.probing.completion import Completion, Mode, ProbeRequest
from canary.probing.providers import Provider, get_provider
from canary.probing.providers.base import ERROR_SNIPPET_CHARS
from canary.probing.registration import register
from canary.probing.summary import CellSummary, PassSummary
from canary.scoring import ScoringContext, score_each
from canary.storage.backlog import ResultBacklog
from canary.storage.writes import RunResult, write_results

log = logging.getLogger(__name__)

BATCH_SIZE = 256
SHUTDOWN_WRITE_S = 10.0  # how long a cancelled pass may spend storing what it has


def request_mode(target: Target) -> Mode:
    return "completion" if target.spec.provider == "openai-completions" else "chat"


def served_pool(target: Target, completion: Completion) -> str | None:
    """The serving pool: the value of the first configured served-by header, None when absent.

    Only the first header names the pool; the others (a replica, a platform) are evidence,
    stored with the run but never read as a pool, so a response that carries only them has an
    unknown pool and is not judged by ``routing``.
    """
    if not target.spec.served_by_headers:
        return None
    return completion.served_by.get(target.spec.served_by_headers[0].lower())


def cell_probes(target: Target, probes: Sequence[Probe]) -> list[Probe]:
    """The probes among ``probes`` that run on ``target``: those its ``probes`` globs select.

    Every pass applies it (``canary run`` and the service's jobs alike), so a cell restricted
    to some probe sets never runs the others.
    """
    return select_probes(probes, target.spec.probes)


def session_sets(probes: Sequence[Probe]) -> dict[str, list[Probe]]:
    """The session turns among ``probes``, by set, in turn order."""
    sets: dict[str, list[Probe]] = {}
    for probe in sorted((p for p in probes if p.turn is not None), key=lambda p: p.turn or 0):
        sets.setdefault(probe.probe_set, []).append(probe)
    return sets


CellPlan = tuple[list[Probe], dict[str, list[Probe]]]  # a cell's probes, and its session sets by set


def cell_plan(target: Target, probes: Sequence[Probe], plans: dict[str, CellPlan]) -> CellPlan:
    """A cell's probes and session sets, worked out once per distinct ``probes`` key in ``plans``."""
    key = repr(target.spec.probes)
    if key not in plans:
        own = cell_probes(target, probes)
        plans[key] = (own, session_sets(own))
    return plans[key]


def planned_runs(target: Target, probes: Sequence[Probe]) -> int:
    """How many runs a pass stores for ``target``: each repeat, and each turn of each conversation."""
    return sum(p.spec.repeat if p.turn is None else target.conversations for p in cell_probes(target, probes))


class PassRunner:
    """Runs one pass; see :func:`run_pass`."""

    def __init__(
        self,
        engine: AsyncEngine,
        cells: CellPool,
        *,
        deploy_id: str | None = None,
        on_stored: Callable[[int], None] | None = None,
        batch_size: int = BATCH_SIZE,
        backlog: ResultBacklog | None = None,
    ) -> None:
        self.engine = engine
        self.cells = cells
        self.backlog = backlog
        self.deploy_id = deploy_id
        self.on_stored = on_stored
        self.batch_size = batch_size
        self.pass_id = uuid.uuid4()
        self.leftovers: list[RunResult] = []  # results to store when the pass is cancelled
        self.scoring_errors: dict[str, Counter[str]] = {}  # cell -> scorer -> runs it raised on

    async def run(self, targets: Sequence[Target], probes: Sequence[Probe]) -> PassSummary:
        """1. Record cells and probe versions. 2. Load the cells' reference outputs.
        3. Probe every (cell, probe its ``probes`` key selects) concurrently, bounded per
           cell; a session set runs as ``target.conversations`` conversations per cell, each one
           task sending its turns in order. 4. Store in batches."""
        started = time.perf_counter()
        await self._register(targets, probes)
        self.cell_names = {target_id: cell for cell, target_id in self.cell_ids.items()}
        summary = PassSummary(self.pass_id, {t.cell: CellSummary(t.cell) for t in targets})
        send, receive = anyio.create_memory_object_stream[RunResult](max_buffer_size=self.batch_size * 4)
        cells = await self.cells.get_all(targets)
        plans: dict[str, CellPlan] = {}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, receive, summary)
                async with send, anyio.create_task_group() as probing:
                    for cell in cells:
                        provider = get_provider(cell.target.spec.provider, cell.client)
                        own, conversations = cell_plan(cell.target, probes, plans)
                        for index, probe in enumerate(own):
                            if probe.turn is None:  # session turns run below, as conversations
                                key = cell.target.session_key(index)
                                probing.start_soon(self._probe, provider, cell, probe, key, send)
                        for probe_set, turns in conversations.items():
                            for i in range(cell.target.conversations):
                                key = cell.target.conversation_key(probe_set, i)
                                probing.start_soon(self._session, provider, cell, turns, key, send)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_WRITE_S):
                await self._store(self.leftovers)
            raise
        for cell_name, errors in self.scoring_errors.items():
            summary.cells[cell_name].scoring_errors.update(errors)
        summary.duration_s = time.perf_counter() - started
        return summary

    async def _register(self, targets: Sequence[Target], probes: Sequence[Probe]) -> None:
        """Record new cells and probe versions and load references, once per process (the
        scheduler has usually done it for all its cells at once: :mod:`canary.probing.registration`)."""
        registry = self.cells.registry
        await register(self.engine, registry, targets, probes)
        self.cell_ids = {t.cell: registry.targets[t.cell][1] for t in targets}
        self.probe_ids = registry.probes
        self.references = registry.references

    async def _probe(
        self,
        provider: Provider,
        cell: Cell,
        probe: Probe,
        session_key: str | None,
        send: MemoryObjectSendStream[RunResult],
    ) -> None:
        """Send a probe ``repeat`` times, one after another so that repeats compare to one reference."""
        request = probe.request(request_mode(cell.target), session_key=session_key)
        for repeat_index in range(probe.spec.repeat):
            await send.send(await self._attempt(provider, cell, probe, request, repeat_index))

    async def _session(
        self,
        provider: Provider,
        cell: Cell,
        turns: Sequence[Probe],
        session_key: str,
        send: MemoryObjectSendStream[RunResult],
    ) -> None:
        """Send a session set's turns in order as one conversation on one session key.

        Each turn carries the conversation so far (earlier prompts and the answers given) and is
        scored and stored like any probe, with the session key on its run.
        """
        mode = request_mode(cell.target)
        history: list[tuple[Probe, str]] = []
        for turn in turns:
            request = turn.request(mode, session_key=session_key, history=history)
            result = await self._attempt(provider, cell, turn, request, 0)
            await send.send(result)
            # A failed turn (no text) has no answer to carry on with; its reference answer stands
            # in, so the later turns still run and stay measurable instead of inheriting the failure
            # (and no API is sent an empty assistant message, which some refuse).
            answer = result.completion.text if result.completion.text.strip() else turn.spec.reference_answer
            history.append((turn, answer))

    async def _attempt(
        self, provider: Provider, cell: Cell, probe: Probe, request: ProbeRequest, repeat_index: int
    ) -> RunResult:
        """Send one request within the cell's limits, score it and return its run.

        The first temperature-0 answer a cell gives to a probe version becomes its reference;
        recent answers may re-establish it (:meth:`Registry.renew_reference`).
        """
        target = cell.target
        target_id = self.cell_ids[target.cell]
        probe_pk = self.probe_ids[(probe.id, probe.version)]
        reference = self.references.get((target_id, probe_pk))
        async with cell.concurrency:
            await cell.slot()  # inside the slot: a retry-after set while we queued still holds
            started_at = datetime.now(UTC)
            try:
                completion = await self._complete(provider, target, request)
            except anyio.get_cancelled_exc_class():
                # Shutdown mid-request: the run is recorded as cancelled, not silently lost.
                latency = (datetime.now(UTC) - started_at).total_seconds()
                cancelled = Completion.failed(
                    FailureReason.CANCELLED,
                    "shut down while the request was in flight",
                    latency_s=latency,
                )
                self.leftovers.append(
                    RunResult(
                        self.pass_id,
                        target_id,
                        probe_pk,
                        started_at,
                        cancelled,
                        repeat_index=repeat_index,
                        session_key=request.session_key,
                        deploy_id=self.deploy_id,
                    )
                )
                raise
            cell.pause(completion.retry_after_s)  # before the slot frees, so no waiter slips past
        registry = self.cells.registry  # the reference: first answer, or re-established from evidence
        establishes = (
            completion.ok
            and probe.spec.temperature == 0.0
            and registry.renew_reference(target_id, probe_pk, completion.text)
        )
        pool = served_pool(target, completion)
        context = ScoringContext(reference, expected_pool=target.spec.expected_pool, served_pool=pool)
        scores, failed = score_each(probe, completion, context)
        if failed:
            # A scorer bug must not lose the run nor the other scorers' evidence; the run keeps
            # status ok (the cell answered) and says which scorer failed, so it can be counted.
            log.error("scorers failed on %s %s: %s", target.cell, probe.id, failed)
            completion.reason = FailureReason.SCORING_ERROR
            detail = "; ".join(f"{name}: {error}" for name, error in failed.items())
            completion.error = redact_configured(f"scoring failed: {detail}")[:ERROR_SNIPPET_CHARS]
            self.scoring_errors.setdefault(target.cell, Counter()).update(failed.keys())
        return RunResult(
            pass_id=self.pass_id,
            target_id=target_id,
            probe_pk=probe_pk,
            started_at=started_at,
            completion=completion,
            scores=scores,
            repeat_index=repeat_index,
            session_key=request.session_key,
            deploy_id=self.deploy_id,
            served_pool=pool,
            establishes_reference=establishes,
        )

    @staticmethod
    async def _complete(provider: Provider, target: Target, request: ProbeRequest) -> Completion:
        try:
            return await provider.complete(target, request)
        except Exception as exc:  # providers classify every server failure; this is a canary bug
            log.exception("provider %s raised on %s", provider.kind, target.cell)
            return Completion.failed(FailureReason.INTERNAL, f"{type(exc).__name__}: {exc}"[:300])

    async def _write(self, receive: MemoryObjectReceiveStream[RunResult], summary: PassSummary) -> None:
        """Store results in batches: block for the first, then take whatever else is queued.

        A batch being written when the pass is cancelled is finished (shielded), so nothing is
        half-written; results still queued are handed to the pass's leftovers. With a backlog
        (the service), the whole pass is one batch, stored when it ends (:meth:`_write_whole`).
        """
        if self.backlog is not None:
            await self._write_whole(receive, summary)
            return
        async with receive:
            try:
                async for first in receive:
                    batch = [first]
                    while len(batch) < self.batch_size:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._store_counted(batch, summary)
            except anyio.get_cancelled_exc_class():
                self._keep_queued(receive)
                raise

    def _keep_queued(self, receive: MemoryObjectReceiveStream[RunResult]) -> None:
        """Move what is still queued to the leftovers (the pass is being cancelled)."""
        while True:
            try:
                self.leftovers.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break

    async def _write_whole(self, receive: MemoryObjectReceiveStream[RunResult], summary: PassSummary) -> None:
        """Keep the pass's results and store them in one batch at its end.

        A pass is then stored whole or not at all, through an outage too: the backlog writes or
        drops a batch in one piece. (The service's passes are one cell's probe set: small.) A
        cancelled pass leaves what it has in the leftovers, which :meth:`run` stores as one batch.
        """
        async with receive:
            try:
                async for result in receive:
                    self.leftovers.append(result)
            except anyio.get_cancelled_exc_class():
                self._keep_queued(receive)
                raise
        batch, self.leftovers = self.leftovers, []
        await self._store_counted(batch, summary)

    async def _store_counted(self, batch: list[RunResult], summary: PassSummary) -> None:
        """Store ``batch`` (shielded: a batch being written is finished) and count it in ``summary``."""
        with anyio.CancelScope(shield=True):
            await self._store(batch)
        for result in batch:
            summary.cells[self.cell_names[result.target_id]].add(result)
        if self.on_stored:
            self.on_stored(len(batch))

    async def _store(self, batch: list[RunResult]) -> None:
        if not batch:
            return
        if self.backlog is not None:  # the service: an outage queues results instead of losing them
            await self.backlog.store(batch)
            return
        # A database restart or failover mid-pass is retried; results are only dropped if it stays down.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(OperationalError),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.2, max=5),
            sleep=anyio.sleep,
            reraise=True,
        ):
            with attempt:
                async with self.engine.begin() as conn:
                    await write_results(conn, batch)


async def run_pass(
    engine: AsyncEngine,
    targets: Sequence[Target],
    probes: Sequence[Probe],
    *,
    cells: CellPool | None = None,
    deploy_id: str | None = None,
    on_stored: Callable[[int], None] | None = None,
    backlog: ResultBacklog | None = None,
) -> PassSummary:
    """Run every probe on every target once (``repeat`` times each) and store the results.

    A target with a ``probes`` key runs only the probes it selects (:func:`cell_probes`).

    ``cells`` carries clients and limits across passes (the service keeps one); without it the
    pass opens its own and closes them at the end. With a ``backlog`` (the service's), results
    the database cannot take now are kept and written when it returns.
    """
    options: dict[str, Any] = {"deploy_id": deploy_id, "on_stored": on_stored, "backlog": backlog}
    if cells is not None:
        return await PassRunner(engine, cells, **options).run(targets, probes)
    async with CellPool() as own:
        return await PassRunner(engine, own, **options).run(targets, probes)
