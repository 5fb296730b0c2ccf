"""The scorer interface: a pure function from (probe, completion, context) to scores.

Scorers do no I/O. Each module in this package defines one scorer class and registers it by
name; a probe lists the scorers that apply to it by those names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from canary.probing.catalog import Probe
from canary.probing.completion import Completion


@dataclass(frozen=True, slots=True)
class Score:
    """One metric's outcome for one run: a Bernoulli ``passed`` plus an optional value."""

    metric: str
    passed: bool
    value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoringContext:
    """What a scorer may know beyond the single completion.

    ``reference_text`` is the cell's stored reference output for this probe version (the first
    successful temperature-0 answer), used by the determinism scorer. ``expected_pool`` is the
    cell's configured pool and ``served_pool`` the pool its response named (routing scorer).
    """

    reference_text: str | None = None
    expected_pool: str | None = None
    served_pool: str | None = None


class Scorer(Protocol):
    name: str

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]: ...
