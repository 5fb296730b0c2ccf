"""Scenarios: fault settings on a compressed time line (``scenarios/*.toml``).

A scenario is a list of events, each a fault setting that takes effect on a given day::

    name = "postmortem"
    seconds_per_day = 60          # one simulated day per minute of wall time
    days = 50

    [[events]]
    day = 4
    date = "Aug 5"
    note = "context-window routing error begins"
    fault = "misroute"
    platform = "first-party"
    fraction = 0.008

A :class:`ScenarioRunner` applies the events to a fleet's :class:`FaultState` as its clock
passes them and records a time line of (day, wall time, event), from which :meth:`onsets`
says when each fault began and ended; that is what ``canary demo`` compares with the time the
canary first flagged it. The clock is an argument: :class:`ScenarioClock` follows wall time,
:class:`ManualClock` moves only when told (for tests), so the runner itself never sleeps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from canary.config.validation import read_toml, validate
from canary.errors import ConfigError
from canary.fleet.config import FaultSpec, check_fault
from canary.fleet.faults import FaultState

_EVENT_ONLY = {"day", "date", "note"}


class ScenarioEvent(FaultSpec):
    """A fault setting and the day (from the scenario's start) it takes effect."""

    day: float = Field(ge=0.0)
    date: str = ""
    note: str = ""

    def spec(self) -> FaultSpec:
        return FaultSpec.model_validate(self.model_dump(exclude=_EVENT_ONLY))


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    start_date: str = ""
    seconds_per_day: float = Field(default=60.0, gt=0.0)
    days: float | None = Field(default=None, gt=0.0)
    events: tuple[ScenarioEvent, ...] = Field(min_length=1)

    @property
    def length_days(self) -> float:
        return self.days if self.days is not None else max(e.day for e in self.events) + 1.0

    def ordered(self) -> list[ScenarioEvent]:
        return sorted(self.events, key=lambda e: e.day)


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file; problems raise ConfigError naming the file and key."""
    return validate(Scenario, read_toml(Path(path)), path)


class Clock(Protocol):
    def day(self) -> float: ...

    def wall(self) -> float: ...


class ScenarioClock:
    """Wall-clock time compressed: ``seconds_per_day`` real seconds make one scenario day."""

    def __init__(self, seconds_per_day: float, start: float | None = None) -> None:
        self.seconds_per_day = seconds_per_day
        self.start = time.time() if start is None else start

    def day(self) -> float:
        return (time.time() - self.start) / self.seconds_per_day

    def wall(self) -> float:
        return time.time()

    def wall_at(self, day: float) -> float:
        return self.start + day * self.seconds_per_day


class ManualClock:
    """A clock that moves only by :meth:`advance`; wall times are derived from a fixed start."""

    def __init__(self, seconds_per_day: float = 60.0, start: float = 0.0) -> None:
        self.seconds_per_day = seconds_per_day
        self.start = start
        self._day = 0.0

    def advance(self, days: float) -> None:
        self._day += days

    def day(self) -> float:
        return self._day

    def wall(self) -> float:
        return self.wall_at(self._day)

    def wall_at(self, day: float) -> float:
        return self.start + day * self.seconds_per_day


@dataclass(frozen=True)
class TimelineEntry:
    day: float  # the event's scenario day
    wall: float  # when it was applied (Unix time)
    event: ScenarioEvent


@dataclass(frozen=True)
class FaultOnset:
    """One episode of a fault: when it began and (if it did) when it ended."""

    fault: str
    platform: str
    pool: str | None
    began_day: float
    began_wall: float
    ended_day: float | None
    ended_wall: float | None
    note: str


class ScenarioRunner:
    """Applies a scenario's events to a fleet's faults as a clock passes them."""

    def __init__(self, scenario: Scenario, state: FaultState, clock: Clock) -> None:
        self.scenario = scenario
        self.state = state
        self.clock = clock
        self.timeline: list[TimelineEntry] = []
        self._pending = scenario.ordered()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for index, event in enumerate(scenario.events):
            try:
                check_fault(state.config, event.spec())
            except ValueError as exc:
                raise ConfigError(f"scenario '{scenario.name}'", f"events[{index}]", str(exc)) from None

    def step(self) -> list[TimelineEntry]:
        """Apply every event whose day has come; returns what was applied now."""
        now = self.clock.day()
        applied = []
        while self._pending and self._pending[0].day <= now:
            event = self._pending.pop(0)
            self.state.set(event.spec())
            applied.append(TimelineEntry(event.day, self.clock.wall(), event))
        self.timeline.extend(applied)
        return applied

    @property
    def finished(self) -> bool:
        return not self._pending and self.clock.day() >= self.scenario.length_days

    def start(self, interval_s: float = 0.1) -> None:
        """Step on a background thread until the scenario ends or :meth:`stop`."""

        def loop() -> None:
            while not self._stop.is_set() and not self.finished:
                self.step()
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=loop, name="fleet-scenario", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def onsets(self) -> list[FaultOnset]:
        """Fault episodes from the time line: a fault begins when switched on, ends when off."""
        open_: dict[tuple[str, str, str], TimelineEntry] = {}
        episodes: list[FaultOnset] = []
        for entry in self.timeline:
            spec = entry.event.spec()
            on = spec.enabled and (spec.fraction > 0 if spec.fault == "misroute" else spec.intensity > 0)
            began = open_.get(spec.key)
            if on and began is None:
                open_[spec.key] = entry
            elif not on and began is not None:
                del open_[spec.key]
                episodes.append(_episode(began, entry))
        episodes.extend(_episode(began, None) for began in open_.values())
        return sorted(episodes, key=lambda e: e.began_day)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "day": round(self.clock.day(), 3),
            "finished": self.finished,
            "timeline": [
                {
                    "day": e.day,
                    "wall": e.wall,
                    "date": e.event.date,
                    "note": e.event.note,
                    **e.event.spec().model_dump(),
                }
                for e in self.timeline
            ],
        }


def _episode(began: TimelineEntry, ended: TimelineEntry | None) -> FaultOnset:
    spec = began.event.spec()
    return FaultOnset(
        fault=spec.fault,
        platform=spec.platform,
        pool=spec.pool,
        began_day=began.day,
        began_wall=began.wall,
        ended_day=ended.day if ended else None,
        ended_wall=ended.wall if ended else None,
        note=began.event.note,
    )
