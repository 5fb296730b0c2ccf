"""``canary demo``: replay the postmortem on the reference fleet and show what the canary catches.

1. Start a private PostgreSQL (fresh, under a temporary directory unless ``--data-dir``).
2. Start the reference fleet on loopback and point one canary cell at every pool and front door.
3. Replay ``scenarios/postmortem.toml`` on a manual clock: each pass of the canary is
   ``days_per_pass`` scenario days (or the scenario is cut into ``passes`` passes), so the
   demo's outcome does not depend on machine speed.
4. After every pass, run detection, every cell expected once per pass (so silence counts too);
   remember the first finding that explains each fault.
5. Print, for each fault, when it began and when the canary first flagged it (and on what),
   plus any finding that no fault explains (a false alarm), and how many findings over how
   many runs: ``scenarios/healthy.toml`` (no faults) should end with "0 findings over N runs".

The fleet imports JAX, so this module imports it only inside :func:`run_demo`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from canary.config.loader import Target, build_config
from canary.config.sections import DetectionSpec
from canary.detection.detect import Finding, detect
from canary.probing.catalog import Probe, load_catalog
from canary.probing.runner import run_pass
from canary.probing.summary import PassSummary
from canary.resources import shipped
from canary.storage.engine import async_engine, database

DEFAULT_SCENARIO = shipped("scenarios") / "postmortem.toml"
# Evidence for every fault at ~35 runs per cell and pass (prose and code for scripts and syntax,
# known answers, two temperature-0 repeat sets with logprobs for argmax conformance), so the
# replay takes minutes; the whole catalog works too (--probes '!longctx-xl').
DEFAULT_PROBES = "prose-en,arithmetic,code-python,det-tcp-handshake,det-python-sort"

# Which metrics can reveal each fault; a finding on another metric is not credited to it.
FAULT_METRICS: dict[str, set[str]] = {
    "misroute": {"routing", "known_answer", "determinism", "long_context_recall", "code_syntax", "answered"},
    "corrupt": {"unexpected_script", "code_syntax", "known_answer", "determinism"},
    "topk_drop": {"argmax_conformance", "determinism", "known_answer", "code_syntax"},
}
# The metric that is direct evidence of the fault, whatever else is going on at the same place.
DIRECT_EVIDENCE = {"misroute": "routing", "corrupt": "unexpected_script", "topk_drop": "argmax_conformance"}


@dataclass
class Detection:
    """The first finding credited to one fault episode."""

    fault: str
    platform: str
    pool: str | None
    began_day: float
    ended_day: float | None
    note: str
    flagged_day: float | None = None
    finding: Finding | None = None


@dataclass
class DemoResult:
    detections: list[Detection]
    false_alarms: list[tuple[float, Finding]] = field(default_factory=list)
    # Every finding episode the replay saw (by id, as last returned), of every kind.
    episodes: dict[int, Finding] = field(default_factory=dict)
    passes: int = 0
    runs: int = 0
    seconds: float = 0.0

    @property
    def findings_by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.episodes.values())


def demo_targets(fleet_config: Any, base_url: str, concurrency: int) -> list[Target]:
    from canary.fleet import fleet_targets

    # Front doors are probed without session keys: every request is a fresh routing draw, so the
    # canary samples the router's whole population of sessions rather than a few sticky ones.
    tables = fleet_targets(fleet_config, base_url)
    return list(build_config({"defaults": {"concurrency": concurrency}, "targets": tables}, "demo").targets)


def demo_detection_spec(pass_s: float) -> DetectionSpec:
    """Detection windows scaled to the demo's compressed time, in passes.

    The look-back holds 40 passes and invariants look at the last ~4; a probe version counts
    once it has 5 observations (passes) of its own. The budget and the statistics keep their
    defaults: the observation rate, and so the threshold, follows the compressed clock.
    """
    return DetectionSpec(
        history_s=40 * pass_s,
        window_s=4.2 * pass_s,
        baseline_s=3600.0,
        peer_window_s=8.2 * pass_s,
        min_baseline_observations=5,
        deploy_lookaround_s=60.0,
    )


def credit(detections: list[Detection], finding: Finding, day: float) -> bool:
    """Credit ``finding`` to the open fault episode it best explains; False if none explains it.

    1. Direct evidence first: a ``routing`` failure is a misroute, an unexpected script is
       corruption, an argmax violation a dropped top token.
    2. Otherwise the most specific episode: one on the finding's own pool before one that is
       platform-wide (a front door sees its pools' faults too).
    """
    _model, platform, pool = finding.cell.split("/", 2)

    def explains(d: Detection) -> bool:
        active = d.began_day <= day and (d.ended_day is None or day <= d.ended_day + 1)
        # A misroute happens at the front door: a pool probed directly never sees it.
        where = ("front-door",) if d.fault == "misroute" else (d.pool, "front-door")
        same_place = d.platform == platform and pool in where
        return active and same_place and finding.metric in FAULT_METRICS[d.fault]

    candidates = sorted(
        (d for d in detections if explains(d)),
        key=lambda d: (DIRECT_EVIDENCE[d.fault] != finding.metric, d.pool is None),
    )
    if not candidates:
        return False
    best = candidates[0]
    if best.flagged_day is None:
        best.flagged_day, best.finding = day, finding
    return True


@contextmanager
def demo_database(data_dir: Path | None) -> Iterator[str]:
    if data_dir is not None:
        with database(None, data_dir) as url:
            yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="canary-demo-") as tmp,
        database(None, Path(tmp) / "postgres") as url,
    ):
        yield url


def run_demo(
    *,
    scenario_path: Path = DEFAULT_SCENARIO,
    days_per_pass: float = 2.0,
    passes: int | None = None,
    probes_pattern: str = DEFAULT_PROBES,
    concurrency: int = 8,
    data_dir: Path | None = None,
    database_url: str | None = None,
    console: Console | None = None,
    show: Callable[[DemoResult, Any, Console], None] | None = None,
) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it saw.

    ``passes`` cuts the scenario into that many passes (overriding ``days_per_pass``): the way
    to replay it over more runs, e.g. the healthy scenario over 100,000. ``show`` prints the
    result (default :func:`print_result` on ``console``).
    """
    from canary.fleet import default_fleet_config, load_scenario, run_fleet_in_thread
    from canary.fleet.scenario import ManualClock

    console = console or Console()
    scenario = load_scenario(scenario_path)
    if passes is not None:
        days_per_pass = scenario.length_days / passes
    probes = load_catalog().select(probes_pattern)
    fleet_config = default_fleet_config()
    started = time.monotonic()
    db_context = database(database_url) if database_url else demo_database(data_dir)
    with db_context as url, run_fleet_in_thread(fleet_config, warm_up=True) as fleet:
        targets = demo_targets(fleet_config, fleet.base_url, concurrency)
        clock = ManualClock(seconds_per_day=1.0)
        runner = fleet.start_scenario(scenario, clock)
        console.print(
            f"[bold]canary demo[/]: {scenario.name} — {len(targets)} cells × {len(probes)} probes, "
            f"{days_per_pass:g} day(s) per pass, fleet at {fleet.base_url}"
        )
        result = anyio.run(_replay, url, targets, probes, runner, clock, scenario, days_per_pass, console)
    result.seconds = time.monotonic() - started
    (show or print_result)(result, scenario, console)
    return result


async def _replay(
    url: str,
    targets: list[Target],
    probes: list[Probe],
    runner: Any,
    clock: Any,
    scenario: Any,
    days_per_pass: float,
    console: Console,
) -> DemoResult:
    engine = async_engine(url)
    result = DemoResult(detections=[])
    seen: set[int] = set()
    try:
        while clock.day() < scenario.length_days:
            for entry in runner.step():
                console.print(
                    f"  day {entry.day:>4g} {entry.event.date or '':>7}  [yellow]event[/]  {entry.event.note}"
                )
            summary: PassSummary = await run_pass(engine, targets, probes)
            result.passes += 1
            result.runs += summary.stored
            result.detections = _sync_episodes(result.detections, runner.onsets())
            spec = demo_detection_spec(summary.duration_s)
            day = clock.day()
            expected = {t.cell: summary.duration_s for t in targets}  # every cell, every pass
            findings = await detect(engine, spec, datetime.now(UTC), expected=expected)
            result.episodes.update((f.id, f) for f in findings if f.id is not None)
            # Direct evidence first, so a pass that shows a fault both ways credits the direct one.
            direct = set(DIRECT_EVIDENCE.values())
            for finding in sorted(findings, key=lambda f: f.metric not in direct):
                key = hash((finding.cell, finding.metric))
                if not credit(result.detections, finding, day) and key not in seen:
                    result.false_alarms.append((day, finding))
                if key not in seen:
                    seen.add(key)
                    console.print(f"  day {day:>4g}          [red]finding[/] {finding.message[:160]}")
            # Whole passes, however the scenario's length divides (a float sum may fall short).
            clock.advance(days_per_pass)
            if math.isclose(clock.day(), scenario.length_days, rel_tol=1e-9):
                break
    finally:
        await engine.dispose()
    return result


def _sync_episodes(current: list[Detection], onsets: Sequence[Any]) -> list[Detection]:
    """Keep what was already credited; add episodes that began since, update ended days."""
    known = {(d.fault, d.platform, d.pool, d.began_day): d for d in current}
    out = []
    for o in onsets:
        d = known.get((o.fault, o.platform, o.pool, o.began_day))
        if d is None:
            d = Detection(o.fault, o.platform, o.pool, o.began_day, o.ended_day, o.note)
        d.ended_day = o.ended_day
        out.append(d)
    return out


def fault_table(result: DemoResult) -> Table:
    """One row per fault episode: where, when it began and ended, when and how it was first flagged."""
    table = Table(title="faults: when each began and when the canary first flagged it")
    for column in ("fault", "where", "began (day)", "ended", "first flagged (day)", "delay", "by"):
        table.add_column(column)
    for d in result.detections:
        where = f"{d.platform}/{d.pool or '*'}"
        ended = "-" if d.ended_day is None else f"{d.ended_day:g}"
        if d.finding is None or d.flagged_day is None:
            flagged, delay, by = "[red]not flagged[/]", "-", "-"
        else:
            flagged = f"{d.flagged_day:g}"
            delay = f"{d.flagged_day - d.began_day:g} d"
            by = f"{d.finding.metric} on {d.finding.cell} ({d.finding.kind})"
        table.add_row(d.fault, where, f"{d.began_day:g}", ended, flagged, delay, by)
    return table


def result_data(result: DemoResult) -> dict[str, Any]:
    """What the replay saw as JSON-ready data (``canary demo --format json``)."""
    faults = [
        {
            "fault": d.fault,
            "platform": d.platform,
            "pool": d.pool,
            "note": d.note,
            "began_day": d.began_day,
            "ended_day": d.ended_day,
            "flagged_day": d.flagged_day,
            "metric": d.finding.metric if d.finding else None,
            "cell": d.finding.cell if d.finding else None,
            "kind": d.finding.kind if d.finding else None,
        }
        for d in result.detections
    ]
    return {
        "passes": result.passes,
        "runs": result.runs,
        "seconds": result.seconds,
        "findings": len(result.episodes),
        "findings_by_kind": dict(result.findings_by_kind),
        "faults": faults,
        "unexplained": [{"day": day, "message": f.message} for day, f in result.false_alarms],
    }


def print_result(result: DemoResult, scenario: Any, console: Console, *, table: bool = True) -> None:
    """The fault table (unless ``table`` is False), then the totals and the unexplained findings."""
    if not result.detections:
        console.print(f"{scenario.name}: no fault was switched on, so every finding is a false alarm")
    if result.detections and table:
        console.print(fault_table(result))
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.findings_by_kind.items()))
    console.print(
        f"{result.passes} passes, {result.runs:,} runs in {result.seconds:.0f}s; "
        f"{len(result.episodes)} findings over {result.runs:,} runs{f' ({kinds})' if kinds else ''}; "
        f"findings no fault explains: {len(result.false_alarms)}"
    )
    for day, finding in result.false_alarms[:10]:
        console.print(f"  unexplained on day {day:g}: {finding.message[:200]}")
