"""The equivalence probes (``probes/equivalence/*.toml``): one catalog section per test.

Pass/fail probes see gross symptoms; these probes ask whether a pool serves the same model as
its peers (see :mod:`canary.stats.equivalence` and :mod:`canary.stats.mmd`):

- ``[[forced]]``: a fixed prompt and a fixed continuation, scored teacher-forced (the server
  returns the continuation's prompt log-probabilities in one forward pass);
- ``[[greedy]]``: a prompt sent at temperature 0; where a cell's tokens diverge from its peers'
  answers is the greedy-agreement statistic;
- ``[[sampled]]``: a prompt sampled at temperature > 0, ``samples`` times per cell, for the MMD
  two-sample test on platforms that return no logprobs.

Each probe's ``version`` is a hash of its content, as in the main catalog. ``reference_answer``
(greedy and sampled) is what the reference fleet's synthetic model answers; nothing compares a
real model with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from canary.config.loader import EquivalenceTest
from canary.config.validation import read_toml, validate
from canary.errors import ConfigError
from canary.resources import shipped

EQUIVALENCE_TESTS: tuple[EquivalenceTest, ...] = ("forced", "greedy", "sampled")
_ID = r"^[a-z0-9][a-z0-9_.-]*$"


class ForcedProbe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    prompt: str = Field(min_length=1)
    continuation: str = Field(min_length=1)
    tags: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """What the server is sent (and echoes back with log-probabilities)."""
        return self.prompt + self.continuation


class GreedyProbe(BaseModel):
    """A prompt sent at temperature 0 (``reference_answer``: the reference fleet's answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    prompt: str = Field(min_length=1)
    reference_answer: str = Field(min_length=1)
    max_tokens: int = Field(default=64, ge=1, le=4096)
    tags: tuple[str, ...] = ()


class SampledProbe(GreedyProbe):
    """A prompt sampled ``samples`` times at ``temperature`` > 0."""

    temperature: float = Field(default=1.0, gt=0.0, le=2.0)
    max_tokens: int = Field(default=48, ge=1, le=4096)
    samples: int = Field(default=10, ge=2, le=200)


class EquivalenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    forced: list[ForcedProbe] = []
    greedy: list[GreedyProbe] = []
    sampled: list[SampledProbe] = []


def version(probe: BaseModel) -> str:
    """16 hex digits of SHA-256 over the probe's content."""
    canonical = json.dumps(probe.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EquivalenceCatalog:
    forced: tuple[ForcedProbe, ...] = ()
    greedy: tuple[GreedyProbe, ...] = ()
    sampled: tuple[SampledProbe, ...] = ()

    def texts(self) -> list[str]:
        """Every text a synthetic model must be able to produce or score."""
        return [
            *(p.continuation for p in self.forced),
            *(p.reference_answer for p in self.greedy),
            *(p.reference_answer for p in self.sampled),
        ]


def default_equivalence_dir() -> Path:
    return shipped("probes") / "equivalence"


def load_equivalence(directory: Path | None = None) -> EquivalenceCatalog:
    """Load every ``*.toml`` under ``directory``; ids must be unique across files and sections."""
    directory = directory or default_equivalence_dir()
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError(directory, "", "no equivalence probe files (*.toml) found")
    seen: dict[str, str] = {}
    forced: list[ForcedProbe] = []
    greedy: list[GreedyProbe] = []
    sampled: list[SampledProbe] = []
    for path in files:
        parsed = validate(EquivalenceFile, read_toml(path), path)
        sections: tuple[tuple[str, Sequence[ForcedProbe | GreedyProbe | SampledProbe]], ...] = (
            ("forced", parsed.forced),
            ("greedy", parsed.greedy),
            ("sampled", parsed.sampled),
        )
        for name, probes in sections:
            for index, probe in enumerate(probes):
                probe_id = probe.id
                if probe_id in seen:
                    problem = f"duplicate id '{probe_id}', also defined in {seen[probe_id]}"
                    raise ConfigError(path, f"{name}[{index}].id", problem)
                seen[probe_id] = str(path)
        forced.extend(parsed.forced)
        greedy.extend(parsed.greedy)
        sampled.extend(parsed.sampled)
    return EquivalenceCatalog(tuple(forced), tuple(greedy), tuple(sampled))
