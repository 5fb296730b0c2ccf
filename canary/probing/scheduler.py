"""Probe scheduling: one APScheduler job per (cell, probe set), for the cells this replica holds.

Each replica keeps its jobs in APScheduler's in-memory store. APScheduler 3 must not share a
job store between processes (its FAQ says so, and two processes on one SQLAlchemy store ran
every job twice), so replicas split the cells instead and never coordinate per job: the service's
membership (:mod:`canary.service.membership`) claims cells in PostgreSQL and tells the scheduler
which to probe (:meth:`ProbeScheduler.set_cells`); a static ``--shard i/N`` (a stable hash, as
Prometheus' ``hashmod`` does) limits the cells a replica may ever claim.

A job runs one pass on its cell through the service's single :class:`CellPool`, so all probe
sets of a cell share its concurrency and requests-per-minute budget. ``max_instances=1`` and
coalescing mean a slow cell skips a beat rather than piling up; each pass is bounded by a time
limit, and being its own task it never delays another cell. Cells under a deploy verdict get a
second, faster "burst" job whose runs are tagged with the deploy id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import Target
from canary.config.sections import ScheduleSpec
from canary.probing import equivalence_runs
from canary.probing.admission import LoopLagMonitor, PassAdmission
from canary.probing.catalog import Catalog, Probe
from canary.probing.cells import CellPool
from canary.probing.registration import register
from canary.probing.runner import cell_probes, run_pass
from canary.service.metrics import ServiceMetrics
from canary.storage.backlog import ResultBacklog

log = logging.getLogger(__name__)
# APScheduler logs a warning for every beat it skips or misses; both are counted in /metrics
# (canary_scheduler_overlaps_total, canary_scheduler_missed_runs_total), and an overloaded replica
# skipping thousands of beats a minute spent its CPU on those lines.
for _name in ("apscheduler.scheduler", "apscheduler.executors.default"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@dataclass(frozen=True)
class Shard:
    """This replica's share of the cells: ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` with ``0 <= i < N``."""
        try:
            i, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/N, got {text!r}") from None
        if not 0 <= i < n:
            raise ValueError(f"shard index must be in 0..{n - 1}, got {i}")
        return cls(i, n)

    def owns(self, cell: str) -> bool:
        return stable_hash(cell) % self.count == self.index


def stable_hash(text: str) -> int:
    """A hash that every replica and every Python process agrees on (``hash()`` is salted)."""
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


@dataclass(frozen=True)
class JobSpec:
    """One (cell, probe set) and how often to probe it."""

    target: Target
    probe_set: str
    probes: tuple[Probe, ...]
    interval_s: float
    jitter_s: float

    @property
    def cell(self) -> str:
        return self.target.cell

    @property
    def key(self) -> str:
        return f"{self.cell}::{self.probe_set}"


def plan_jobs(
    targets: Sequence[Target],
    catalog: Catalog,
    shard: Shard,
    spec: ScheduleSpec,
    equivalence: Sequence[Probe] = (),
) -> list[JobSpec]:
    """The jobs of this replica: every owned cell times every probe set its ``probes`` glob selects,
    and, with ``equivalence_interval_s`` set, the ``equivalence`` probe sets of its tests."""
    jobs: list[JobSpec] = []
    for target in targets:
        if not shard.owns(target.cell):
            continue
        by_set: dict[str, list[Probe]] = {}
        scheduled = equivalence_runs.probes_for(target, equivalence) if spec.equivalence_interval_s else []
        for probe in [*cell_probes(target, catalog.probes), *scheduled]:
            by_set.setdefault(probe.probe_set, []).append(probe)
        for probe_set, probes in sorted(by_set.items()):
            default = spec.equivalence_interval_s if probe_set in equivalence_runs.SETS.values() else None
            interval = spec.probe_set_intervals.get(probe_set, default or target.interval_s)
            jobs.append(
                JobSpec(target, probe_set, tuple(probes), interval, min(target.jitter_s, interval / 2))
            )
    return jobs


class ProbeScheduler:
    """Runs the planned jobs on an AsyncIOScheduler; call :meth:`start` inside the event loop."""

    def __init__(
        self,
        engine: AsyncEngine,
        cells: CellPool,
        jobs: Sequence[JobSpec],
        spec: ScheduleSpec,
        metrics: ServiceMetrics,
        backlog: ResultBacklog | None = None,
        may_probe: Callable[[str], bool] | None = None,
    ) -> None:
        self.engine, self.cells, self.spec, self.metrics = engine, cells, spec, metrics
        self.backlog = backlog  # where passes store: kept through a database outage
        self.jobs = {job.key: job for job in jobs}  # every job this replica may be given
        self.by_cell: dict[str, list[JobSpec]] = {}  # the same jobs by cell, so a tick is O(changes)
        for job in jobs:
            self.by_cell.setdefault(job.cell, []).append(job)
        self.may_probe = may_probe  # checked before each pass: does this replica still hold the cell?
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.owned: set[str] = set()  # cells whose jobs are scheduled now
        self.spread = True  # the first cells given spread their first runs; later ones start at once
        self.bursts: dict[str, str] = {}  # cell -> deploy id, for cells under a verdict
        self.scheduled: dict[str, datetime] = {}  # APScheduler job id -> scheduled run time
        self.bursts_wanted: dict[str, str] = {}  # the last bursts asked for, owned or not
        self.burst_jobs: set[str] = set()  # APScheduler ids of the burst jobs scheduled now
        self.in_flight: dict[asyncio.Task[object], str] = {}  # running pass -> its cell
        self.registering: set[asyncio.Task[None]] = set()  # batch registrations under way
        # Passes wait here while the event loop lags (a regular and a burst job per cell at most).
        self.admission = PassAdmission(2 * len(self.jobs), spec.max_loop_lag_s, metrics.pass_limit.set)
        self.lag_monitor: asyncio.Task[None] | None = None
        self.started = False

    def start(self, now: datetime | None = None, cells: set[str] | None = None) -> None:
        """Start with the jobs of ``cells`` (default: every job's cell) scheduled."""
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self.scheduler.start()
        self.started = True
        try:
            self.lag_monitor = asyncio.get_running_loop().create_task(LoopLagMonitor(self._on_loop_lag).run())
        except RuntimeError:  # no event loop (a test driving the jobs by hand): no limit moves
            pass
        self.set_cells(set(self.by_cell) if cells is None else cells, now)

    def set_cells(self, cells: set[str], now: datetime | None = None) -> None:
        """Probe exactly ``cells`` (of those with jobs) from now on.

        The first cells given start with a phase spread over ``start_spread_s`` (stable per job),
        so a replica does not probe everything at once; a cell given later (taken over from a
        replica that died) is probed at once. A removed cell's running pass is left to finish.

        Membership calls this twice a tick with (nearly) the same cells, so the work is in the
        cells that changed: a per-job look at all 10,000 cells blocked the event loop for seconds.
        """
        if not self.started:
            return  # shut down: nothing more to schedule
        now = now or datetime.now(UTC)
        cells = cells & self.by_cell.keys()
        added, removed = cells - self.owned, self.owned - cells
        self._register(added)
        for cell in removed:
            for job in self.by_cell[cell]:
                self.scheduler.remove_job(job.key)
            for gauge in (self.metrics.cell_interval, self.metrics.last_run):
                try:  # another replica probes it now: its series are not ours
                    gauge.remove(cell)
                except KeyError:
                    pass
        for cell in added:
            for job in self.by_cell[cell]:
                spread = min(self.spec.start_spread_s, job.interval_s) if self.spread else 0.0
                phase = (stable_hash(job.key) % 10_000) / 10_000 * spread
                self._add(job.key, job.key, job.interval_s, job.jitter_s, now + timedelta(seconds=phase))
            self.metrics.cell_interval.labels(cell).set(min(job.interval_s for job in self.by_cell[cell]))
        if cells:
            self.spread = False
        self.owned = cells
        if added or removed:
            self.metrics.jobs.labels("regular").set(sum(len(self.by_cell[cell]) for cell in cells))
        self.set_bursts(self.bursts_wanted, now)

    def _register(self, cells: set[str]) -> None:
        """Record ``cells`` and their probes in the background, in one batch (not one per pass).

        Their first passes wait for it on the registry's lock; if it fails (the database is
        down), each pass registers what it still lacks itself.
        """
        jobs = [job for cell in cells for job in self.by_cell[cell]]
        if not jobs:
            return
        targets = list({job.cell: job.target for job in jobs}.values())
        probes = [probe for job in jobs for probe in job.probes]
        try:
            task = asyncio.get_running_loop().create_task(self._register_batch(targets, probes))
        except RuntimeError:  # no event loop (a test driving the jobs by hand): passes register
            return
        self.registering.add(task)
        task.add_done_callback(self.registering.discard)

    async def _register_batch(self, targets: list[Target], probes: list[Probe]) -> None:
        try:
            await register(self.engine, self.cells.registry, targets, probes)
        except Exception as exc:
            log.warning("registering %d cells failed (%s); passes retry", len(targets), type(exc).__name__)

    def running_cells(self) -> set[str]:
        return set(self.in_flight.values())

    def _add(self, job_id: str, key: str, interval_s: float, jitter_s: float, first: datetime) -> None:
        trigger = IntervalTrigger(seconds=interval_s, jitter=jitter_s or None, start_date=first, timezone=UTC)
        self.scheduler.add_job(
            self._run,
            trigger,
            args=(job_id, key),
            id=job_id,
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, round(self.spec.misfire_grace_s)),
            replace_existing=True,
        )

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_SUBMITTED:
            self.scheduled[event.job_id] = event.scheduled_run_times[-1]
        elif event.code == EVENT_JOB_MISSED:
            self.metrics.missed.inc()
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self.metrics.overlaps.inc()

    def set_bursts(self, bursts: dict[str, str], now: datetime | None = None) -> None:
        """Make exactly the cells in ``bursts`` (cell -> deploy id) burst; owned cells only."""
        now = now or datetime.now(UTC)
        self.bursts_wanted = bursts
        self.bursts = {cell: deploy for cell, deploy in bursts.items() if cell in self.owned}
        wanted = {f"burst::{job.key}": job for cell in self.bursts for job in self.by_cell[cell]}
        for job_id in self.burst_jobs - wanted.keys():
            self.scheduler.remove_job(job_id)
        for job_id in wanted.keys() - self.burst_jobs:
            interval = min(self.spec.burst_interval_s, wanted[job_id].interval_s)
            self._add(job_id, wanted[job_id].key, interval, 0.0, now)
        self.burst_jobs = set(wanted)
        self.metrics.jobs.labels("burst").set(len(wanted))

    async def _run(self, job_id: str, key: str) -> None:
        """One pass of one job once admitted (:mod:`canary.probing.admission`), bounded by its time
        limit from then on; failures are counted, never raised."""
        job = self.jobs[key]
        scheduled = self.scheduled.pop(job_id, None)
        if self.may_probe is not None and not self.may_probe(job.cell):
            return  # the claim lapsed (a stall, a takeover): the next membership tick decides
        task = asyncio.current_task()
        assert task is not None
        self.in_flight[task] = job.cell  # waiting or running: shutdown cancels both
        try:
            async with self.admission.limiter:
                if self.may_probe is not None and not self.may_probe(job.cell):
                    return  # lost while it waited
                if scheduled is not None:  # the lag a pass sees: scheduled time to admission
                    self.metrics.lag.observe(max(0.0, (datetime.now(UTC) - scheduled).total_seconds()))
                self.metrics.in_flight.inc()
                try:
                    await self._pass(job)
                finally:
                    self.metrics.in_flight.dec()
        except asyncio.CancelledError:
            # Shutdown cancelled the pass after its grace time; the runner stored what it had.
            log.info("pass on %s (%s) cancelled at shutdown", job.cell, job.probe_set)
        except Exception:
            log.exception("pass on %s (%s) failed", job.cell, job.probe_set)
            self.metrics.pass_errors.labels(job.cell).inc()
        finally:
            self.in_flight.pop(task, None)

    async def _pass(self, job: JobSpec) -> None:
        with anyio.move_on_after(self.spec.pass_timeout_s or job.interval_s) as scope:
            summary = await run_pass(
                self.engine,
                [job.target],
                job.probes,
                cells=self.cells,
                deploy_id=self.bursts.get(job.cell),
                backlog=self.backlog,
            )
            self.metrics.observe_pass(job.probe_set, summary)
        if scope.cancelled_caught:
            log.warning("pass on %s (%s) hit its time limit", job.cell, job.probe_set)
            self.metrics.pass_timeouts.labels(job.cell).inc()

    def _on_loop_lag(self, lag_s: float) -> None:
        self.metrics.loop_lag.observe(lag_s)
        self.admission.observe(lag_s)

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop scheduling; let in-flight passes finish for ``grace_s``, then cancel them.

        A cancelled pass stores what it has and records its in-flight requests as ``cancelled``
        (the runner does this), so nothing is lost or half-written.
        """
        if not self.started:
            return
        self.scheduler.pause()
        for registration in self.registering:
            registration.cancel()
        if self.lag_monitor is not None:
            self.lag_monitor.cancel()
        if self.in_flight:
            await asyncio.wait(list(self.in_flight), timeout=grace_s)
        remaining = list(self.in_flight)
        for task in remaining:
            task.cancel()
        if remaining:
            await asyncio.wait(remaining)
        self.scheduler.shutdown(wait=False)
        self.started = False
