"""Load the probe catalog (``probes/*.toml``) into versioned :class:`Probe` objects.

A probe file holds an optional ``[defaults]`` table and a list of ``[[probe]]`` tables. The
file's stem is the probe *set* (the unit the scheduler runs). Each probe's ``version`` is a hash
of its resolved content, so editing a prompt makes a new version and never rewrites history.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canary.completion import Message, Mode, ProbeRequest
from canary.errors import ConfigError
from canary.validation import read_toml, validate

DEFAULT_PROBE_DIR = Path(__file__).resolve().parent.parent / "probes"


class AnswerSpec(BaseModel):
    """How ``known_answer`` grades an output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["exact", "casefold", "regex", "numeric", "choice"]
    value: str | float | None = None
    pattern: str | None = None
    tolerance: float = 0.0
    choices: tuple[str, ...] = ()


class ProbeSpec(BaseModel):
    """One ``[[probe]]`` table after defaults are merged in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    prompt: str = Field(min_length=1)
    system: str | None = None
    completion_prompt: str | None = None
    reference_answer: str = Field(min_length=1)
    scorers: tuple[str, ...] = Field(min_length=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    repeat: int = Field(default=1, ge=1, le=64)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    allowed_scripts: tuple[str, ...] = ("Latin",)
    code_language: str | None = None
    code_extract: Literal["fenced", "raw"] = "fenced"
    answer: AnswerSpec | None = None
    context_tokens: int | None = Field(default=None, ge=1)
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _scorer_inputs_present(self) -> ProbeSpec:
        if "known_answer" in self.scorers and self.answer is None:
            raise ValueError("scorer 'known_answer' needs an [probe.answer] table")
        if "code_syntax" in self.scorers and self.code_language is None:
            raise ValueError("scorer 'code_syntax' needs 'code_language'")
        return self


class ProbeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = {}
    probe: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Probe:
    """A catalog probe: its spec, the set it belongs to and its content version."""

    spec: ProbeSpec
    probe_set: str
    version: str
    source: str

    @property
    def id(self) -> str:
        return self.spec.id

    def request(self, mode: Mode, *, session_key: str | None = None) -> ProbeRequest:
        """The request for a chat or completion-style endpoint."""
        s = self.spec
        common: dict[str, Any] = dict(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            logprobs=s.logprobs,
            top_logprobs=s.top_logprobs,
            session_key=session_key,
        )
        if mode == "completion":
            prompt = s.completion_prompt or f"{s.prompt}\n\n"
            return ProbeRequest(mode="completion", prompt=prompt, **common)
        return ProbeRequest(
            mode="chat", messages=(Message("user", s.prompt),), system=s.system, **common
        )


def content_version(spec: ProbeSpec) -> str:
    """A stable hash of everything that defines the probe (16 hex digits of SHA-256)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Catalog:
    probes: tuple[Probe, ...]

    def select(self, pattern: str | None) -> list[Probe]:
        """Probes whose id or set matches the glob (all when ``pattern`` is None)."""
        if not pattern:
            return list(self.probes)
        globs = [g.strip() for g in pattern.split(",") if g.strip()]
        return [
            p for p in self.probes if any(fnmatchcase(p.id, g) or fnmatchcase(p.probe_set, g) for g in globs)
        ]

    def by_id(self, probe_id: str) -> Probe:
        for p in self.probes:
            if p.id == probe_id:
                return p
        raise KeyError(probe_id)

    @property
    def sets(self) -> list[str]:
        return sorted({p.probe_set for p in self.probes})


def load_probe_file(path: Path) -> list[Probe]:
    raw = read_toml(path)
    parsed = validate(ProbeFile, raw, path)
    probes = []
    for index, entry in enumerate(parsed.probe):
        merged = {**parsed.defaults, **entry}
        spec = validate(ProbeSpec, merged, path, prefix=f"probe[{index}]")
        probes.append(Probe(spec=spec, probe_set=path.stem, version=content_version(spec), source=str(path)))
    return probes


def load_catalog(directory: Path | None = None) -> Catalog:
    """Load every ``*.toml`` under ``directory``; probe ids must be unique across files."""
    directory = directory or DEFAULT_PROBE_DIR
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ConfigError(directory, "", "no probe files (*.toml) found")
    seen: dict[str, str] = {}
    probes: list[Probe] = []
    for path in files:
        for probe in load_probe_file(path):
            if probe.id in seen:
                raise ConfigError(path, f"probe id '{probe.id}'", f"duplicate id, also defined in {seen[probe.id]}")
            seen[probe.id] = str(path)
            probes.append(probe)
    return Catalog(tuple(probes))
