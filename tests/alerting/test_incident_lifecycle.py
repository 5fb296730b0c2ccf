"""Incidents end to end: the reference fleet, real passes, detection rounds, a real webhook receiver.

Every test runs the canary's own loop on a compressed clock: a pass of the runner
(:func:`canary.probing.runner.run_pass`) against the reference fleet on loopback, then one
:func:`canary.alerting.round.detection_round` at ``now`` (the moment the pass ended), every
``PASS_S`` seconds. The configuration is the service's: one ``canary.toml`` built with the
cells' ``interval_s = PASS_S`` (so ``Config.intervals`` is what the round expects to hear from)
and detection windows counted in passes, as the demo scales them
(:func:`canary.fleet.demo.demo_detection_spec`). Faults are switched on the running fleet.

- a fault on one pool fires; once it is cleared the alert resolves within two look-back
  windows plus ``resolve_after_s``; the fault coming back is a new alert and a new "firing";
- a cell whose every request starts failing is an ``availability`` finding (the sequential
  test on request errors) and a ``CanaryAvailability``; so is a cell that never answered at all
  (no answer for ``no_data_intervals``: its own history would call that normal);
- a configured cell that stops being probed is a ``no_data`` finding and a ``CanaryNoData``.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.alerting.incidents import AlertChange
from canary.alerting.outbox import OutboxDispatcher
from canary.alerting.round import detection_round
from canary.config.loader import Config, Target, build_config
from canary.detection.episodes import Finding
from canary.fleet import default_fleet_config, fleet_targets
from canary.fleet.demo import demo_detection_spec
from canary.fleet.running import RunningFleet, run_fleet_in_thread
from canary.probing.catalog import Probe, load_catalog
from canary.probing.runner import run_pass
from canary.storage.tables import AlertRow
from tests.alerting.kit import Sink, running_sink

pytestmark = pytest.mark.anyio

SEED = 14
PASS_S = 0.5  # the compressed clock: one pass and one detection round every half second
# Ten English prose probes (ten strata of unexpected_script, three of known_answer): enough
# independent evidence per pass that a gross fault is flagged within a few passes.
PROBES = "prose-en"
# Each probe version needs its own baseline before it counts (min_baseline_observations = 5
# in the demo's spec); more clean passes make that baseline tighter and detection faster.
WARM_UP = 15
FAULTY = "canary-small/cloud-a/short-context"
PEER = "canary-small/cloud-a/long-context"  # the same model's other pool, healthy throughout
DOWN = "canary-small/cloud-b/short-context"
SILENT = "canary-large/first-party/short-context"
KEPT = "canary-large/first-party/long-context"
RESOLVE_AFTER_S = 2 * PASS_S


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    with run_fleet_in_thread(default_fleet_config()) as running:
        # Which answers a partial fault hits is drawn from the fleet's generator: seed it.
        running.fleet.rng = np.random.default_rng(SEED)
        yield running
        running.clear_faults()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with running_sink() as s:
        yield s


@dataclass
class Round:
    """One pass and the detection round after it."""

    index: int
    at: float  # time.monotonic() when the round returned
    findings: list[Finding]
    changes: list[AlertChange]


@dataclass
class Canary:
    """The service's loop, driven by the test: a pass of ``targets``, then a round at ``now``."""

    engine: AsyncEngine
    config: Config
    probes: list[Probe]
    dispatcher: OutboxDispatcher
    rounds: list[Round] = field(default_factory=list)

    async def step(self, targets: Sequence[Target] | None = None) -> Round:
        began = time.monotonic()
        await run_pass(self.engine, self.config.targets if targets is None else targets, self.probes)
        result = await detection_round(
            self.engine,
            self.config.detection,
            self.config.alerts,
            self.dispatcher,
            datetime.now(UTC),
            self.config.intervals,
        )
        done = Round(len(self.rounds), time.monotonic(), result.findings, result.changes)
        self.rounds.append(done)
        await anyio.sleep(max(0.0, PASS_S - (time.monotonic() - began)))
        return done

    async def until(
        self, what: str, done: Callable[[Round], bool], limit: int, targets: Sequence[Target] | None = None
    ) -> Round:
        """Step until ``done`` holds for a round; fail after ``limit`` passes, saying what was seen."""
        for _ in range(limit):
            r = await self.step(targets)
            if done(r):
                return r
        seen = [
            (r.index, sorted({(f.cell, f.metric, f.kind) for f in r.findings})) for r in self.rounds[-limit:]
        ]
        raise AssertionError(f"no {what} within {limit} passes; findings per pass: {seen}")


def canary_config(fleet: RunningFleet, sink: Sink, cells: Sequence[str], **detection: Any) -> Config:
    """A canary.toml for some fleet cells, every cell probed each ``PASS_S``."""
    spec = demo_detection_spec(PASS_S).model_copy(update=detection)
    tables = [
        t
        for t in fleet_targets(fleet.config, fleet.base_url)
        if f"{t['model']}/{t['platform']}/{t['pool']}" in cells
    ]
    receiver = {"name": "oncall", "kind": "webhook", "url": sink.url}
    return build_config(
        {
            "defaults": {"concurrency": 2, "interval_s": PASS_S, "jitter_s": 0},
            "targets": tables,
            "detection": spec.model_dump(),
            "alerts": {"for_s": 0, "resolve_after_s": RESOLVE_AFTER_S, "receivers": [receiver]},
        },
        "canary.toml",
    )


def make_canary(engine: AsyncEngine, config: Config) -> Canary:
    dispatcher = OutboxDispatcher.from_spec(
        config.alerts, config.path, receivers=config.receivers, rng=random.Random(SEED)
    )
    return Canary(engine, config, load_catalog().select(PROBES), dispatcher)


def notifications(sink: Sink, cell: str, **labels: str) -> list[dict[str, Any]]:
    """The alerts the receiver accepted for ``cell`` (with these labels), oldest first."""
    out = []
    for body in sink.accepted:
        for alert in body["alerts"]:
            got = alert["labels"]
            if got.get("cell") == cell and all(got.get(k) == v for k, v in labels.items()):
                out.append(alert)
    return out


def statuses(sink: Sink, cell: str, **labels: str) -> list[str]:
    return [a["status"] for a in notifications(sink, cell, **labels)]


async def alert_rows(engine: AsyncEngine, metric: str) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(AlertRow.id, AlertRow.fingerprint, AlertRow.state)
            .where(AlertRow.metric == metric)
            .order_by(AlertRow.id)
        )
        return [(int(i), str(fp), str(state)) for i, fp, state in rows.all()]


def closed_port() -> socket.socket:
    """A loopback socket bound but never listening: connecting to its port is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_a_fault_fires_resolves_once_cleared_and_fires_again_as_a_new_alert(
    fleet: RunningFleet, sink: Sink, engine: AsyncEngine
) -> None:
    config = canary_config(fleet, sink, [FAULTY, PEER])
    canary = make_canary(engine, config)
    quality = {"alertname": "CanaryQualityRegression", "metric": "unexpected_script"}
    for _ in range(WARM_UP):
        await canary.step()
    assert sink.accepted == [], "a healthy fleet raised an alert while the baseline was built"

    # 1. The fault: rare-script tokens in every answer of one pool.
    fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=1.0)
    onset = len(canary.rounds)
    fired = await canary.until(
        "firing notification", lambda r: statuses(sink, FAULTY, **quality) == ["firing"], 12
    )
    delay = fired.index - onset + 1
    first_alert = await alert_rows(engine, "unexpected_script")
    assert [state for _, _, state in first_alert] == ["firing"]

    # 2. Cleared: the incident ends on evidence for health, then resolve_after_s without findings.
    fleet.clear_faults()
    cleared_round, cleared_at = len(canary.rounds), time.monotonic()
    history_s = config.detection.history_s
    bound_s = 2 * history_s + RESOLVE_AFTER_S
    resolved = await canary.until(
        "resolved notification",
        lambda r: statuses(sink, FAULTY, **quality) == ["firing", "resolved"] or r.at - cleared_at > bound_s,
        int(bound_s / PASS_S) + 10,
    )
    took_s, took_passes = resolved.at - cleared_at, resolved.index - cleared_round + 1
    over = next(
        r.index - cleared_round + 1
        for r in canary.rounds[cleared_round:]
        if not any(f.cell == FAULTY and f.metric == "unexpected_script" for f in r.findings)
    )
    measured = (
        f"incident over {over} passes and alert resolved {took_passes} passes ({took_s:.1f} s) after "
        f"the fault was cleared (resolve_after_s = {RESOLVE_AFTER_S / PASS_S:.0f} passes); bound "
        f"2 x history_s + resolve_after_s = {bound_s:.1f} s ({bound_s / PASS_S:.0f} passes of {PASS_S} s); "
        f"flagged {delay} passes after onset"
    )
    assert statuses(sink, FAULTY, **quality) == ["firing", "resolved"], measured
    assert took_s <= bound_s, measured
    print(measured)  # the figure, for `pytest -s`

    # 3. Quiet until the first episode has left the peer window too: nothing fires again on its
    #    evidence, so what fires next is the recurrence's own.
    while time.monotonic() - cleared_at < config.detection.peer_window_s:
        await canary.step()
    assert statuses(sink, FAULTY, **quality) == ["firing", "resolved"], (
        "the resolved alert fired again while healthy"
    )

    # 4. The fault again: a new incident, a new alert row and a second "firing" at the receiver.
    fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=1.0)
    await canary.until(
        "second firing notification",
        lambda r: statuses(sink, FAULTY, **quality) == ["firing", "resolved", "firing"],
        12,
    )
    rows = await alert_rows(engine, "unexpected_script")
    assert [state for _, _, state in rows] == ["resolved", "firing"], rows
    assert rows[0][0] == first_alert[0][0] and rows[1][0] != rows[0][0]
    assert rows[0][1] == rows[1][1]  # the same (cell, metric) fingerprint, a new incident
    firing = [a for a in notifications(sink, FAULTY, **quality) if a["status"] == "firing"]
    assert firing[0]["startsAt"] != firing[1]["startsAt"]
    assert notifications(sink, PEER) == [], "the healthy pool of the same model was flagged"


def unreachable(target: Target, sock: socket.socket) -> Target:
    """The same cell pointed at a port that refuses connections: its replicas have gone away."""
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    return dataclasses.replace(target, spec=target.spec.model_copy(update={"base_url": url}))


async def test_a_cell_whose_every_request_starts_failing_is_an_availability_alert(
    fleet: RunningFleet, sink: Sink, engine: AsyncEngine
) -> None:
    # A long silence allowance, so that it is the sequential test on request errors that fires
    # here (the outage rule, no answer for no_data_intervals, is the next test's).
    config = canary_config(fleet, sink, [DOWN], no_data_intervals=20)
    canary = make_canary(engine, config)
    for _ in range(WARM_UP):
        await canary.step()
    assert sink.accepted == []

    (healthy,) = config.targets
    onset = len(canary.rounds)
    with closed_port() as sock:
        fired = await canary.until(
            "availability alert",
            lambda r: bool(statuses(sink, DOWN, alertname="CanaryAvailability")),
            12,
            [unreachable(healthy, sock)],
        )
    (finding,) = [f for f in fired.findings if f.cell == DOWN]
    assert finding.kind == "availability" and finding.metric == "availability", finding.message
    assert "outage" not in finding.details and finding.observed_rate > 0.9, finding.message
    (alert,) = notifications(sink, DOWN)
    assert alert["status"] == "firing" and alert["labels"]["kind"] == "availability"
    print(f"availability alert {fired.index - onset + 1} passes after the cell went down")


async def test_a_cell_that_never_answers_is_an_availability_alert_too(
    fleet: RunningFleet, sink: Sink, engine: AsyncEngine
) -> None:
    # Down from its first request: its own history is all errors, so the sequential test sees
    # nothing unusual; no answer for no_data_intervals is a finding of its own.
    config = canary_config(fleet, sink, [DOWN])
    canary = make_canary(engine, config)
    (target,) = config.targets
    due_s = config.detection.no_data_intervals * config.intervals[DOWN]
    with closed_port() as sock:
        fired = await canary.until(
            "availability alert",
            lambda r: bool(statuses(sink, DOWN, alertname="CanaryAvailability")),
            int(due_s / PASS_S) + 6,
            [unreachable(target, sock)],
        )
    (finding,) = [f for f in fired.findings if f.cell == DOWN]
    assert finding.kind == "availability" and finding.details.get("outage"), finding.message
    assert finding.failures == finding.n_observed > 0 and "connection_error" in (finding.sample_output or "")
    assert finding.details["failing_s"] >= due_s
    assert statuses(sink, DOWN) == ["firing"]
    print(f"outage flagged after {len(canary.rounds)} passes: {finding.message}")


async def test_a_configured_cell_that_stops_being_probed_is_a_no_data_alert(
    fleet: RunningFleet, sink: Sink, engine: AsyncEngine
) -> None:
    config = canary_config(fleet, sink, [SILENT, KEPT])
    canary = make_canary(engine, config)
    for _ in range(2):
        await canary.step()
    assert sink.accepted == []

    # The cell stays configured (in Config.intervals) but its passes stop.
    kept = [t for t in config.targets if t.cell == KEPT]
    stopped = len(canary.rounds)
    due_s = config.detection.no_data_intervals * config.intervals[SILENT]
    fired = await canary.until(
        "no-data alert",
        lambda r: bool(statuses(sink, SILENT, alertname="CanaryNoData")),
        int(due_s / PASS_S) + 6,
        kept,
    )
    (finding,) = [f for f in fired.findings if f.cell == SILENT]
    assert finding.kind == "no_data" and finding.metric == "no_data", finding.message
    silent_s = finding.details["silent_s"]  # since the cell's last run began
    measured = (
        f"flagged {fired.index - stopped + 1} passes, {silent_s:.2f} s after its last run (due {due_s} s)"
    )
    # Flagged once due, by the first round or two after (a round comes every pass, ~PASS_S).
    gap = max(b.at - a.at for a, b in zip(canary.rounds, canary.rounds[1:], strict=False))
    assert due_s <= silent_s <= due_s + 2 * max(gap, PASS_S), measured
    assert statuses(sink, SILENT) == ["firing"]
    assert notifications(sink, KEPT) == []
    print(measured)
