"""Load the probe catalog (``probes/*.toml``) into versioned :class:`Probe` objects.

A probe file holds an optional ``[defaults]`` table and a list of ``[[probe]]`` tables. The
file's stem is the probe *set* (the unit the scheduler runs). Each probe's ``version`` is a hash
of its resolved content and of the exact prompts it sends, so editing a prompt makes a new
version and never rewrites history.

Long-context probes carry a ``[probe.needle]`` table: the prompt they send is a haystack built
deterministically at load time from fixed filler sentences, with the needle statement at a
configured depth, sized to ``context_tokens``, followed by the probe's question.

A file with a top-level ``session = true`` is a *session set*: its probes are the turns of one
conversation, in file order. Each turn is sent with the turns before it (their prompts and the
model's answers) on one session key, so a turn's version also covers the turns before it:
editing turn 1 makes new versions of every turn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canary.config.globs import Patterns, Selection
from canary.config.validation import read_toml, validate
from canary.errors import ConfigError
from canary.probing.assertions import KNOWN_SCORERS, Assertion, parse_assertions
from canary.probing.completion import Message, Mode, ProbeRequest
from canary.resources import shipped

DEFAULT_PROBE_DIR = shipped("probes")

CodeLanguage = Literal["python", "javascript", "sql", "bash", "json"]

CHARS_PER_TOKEN = 4
"""Haystack sizing: English filler averages about four characters per token in BPE tokenizers."""


class AnswerSpec(BaseModel):
    """How ``known_answer`` grades an output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["exact", "casefold", "regex", "numeric", "choice"]
    value: str | float | None = None
    pattern: str | None = None
    tolerance: float = Field(default=0.0, ge=0.0)
    choices: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _kind_inputs_present(self) -> AnswerSpec:
        if self.kind in ("exact", "casefold") and not isinstance(self.value, str):
            raise ValueError(f"answer kind '{self.kind}' needs a string 'value'")
        if self.kind == "numeric" and not isinstance(self.value, float):
            raise ValueError("answer kind 'numeric' needs a number 'value'")
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("answer kind 'regex' needs 'pattern'")
            try:
                regex.compile(self.pattern)
            except regex.error as exc:
                raise ValueError(f"'pattern' is not a valid regular expression: {exc}") from None
        if self.kind == "choice" and (len(self.choices) < 2 or self.value not in self.choices):
            raise ValueError("answer kind 'choice' needs at least two 'choices' and a 'value' among them")
        return self


class NeedleSpec(BaseModel):
    """A needle-in-a-haystack setup: the statement hidden in filler text and what must be recalled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    depth: float = Field(default=0.5, ge=0.0, le=1.0)
    filler: tuple[str, ...] = Field(min_length=1)
    preamble: str = "Read the document below, then answer the question that follows it."

    @model_validator(mode="after")
    def _secret_in_statement(self) -> NeedleSpec:
        if self.secret not in self.statement:
            raise ValueError("needle 'statement' must contain its 'secret'")
        return self


class ProbeSpec(BaseModel):
    """One ``[[probe]]`` table after defaults are merged in."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    prompt: str = Field(min_length=1)
    system: str | None = None
    completion_prompt: str | None = None
    reference_answer: str = Field(min_length=1)
    scorers: tuple[str, ...] = ()
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    repeat: int = Field(default=1, ge=1, le=64)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    allowed_scripts: tuple[str, ...] = ("Latin",)
    code_language: CodeLanguage | None = None
    code_extract: Literal["fenced", "raw"] = "fenced"
    answer: AnswerSpec | None = None
    context_tokens: int | None = Field(default=None, ge=1)
    needle: NeedleSpec | None = None
    tags: tuple[str, ...] = ()
    assertions: tuple[Assertion, ...] = Field(default=(), alias="assert")  # [[probe.assert]]

    @field_validator("scorers")
    @classmethod
    def _scorers_known(cls, scorers: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in scorers if name not in KNOWN_SCORERS]
        if unknown:
            raise ValueError(f"unknown scorer '{unknown[0]}' (known: {', '.join(sorted(KNOWN_SCORERS))})")
        return scorers

    @field_validator("allowed_scripts")
    @classmethod
    def _scripts_known(cls, scripts: tuple[str, ...]) -> tuple[str, ...]:
        for name in scripts:
            try:
                regex.compile(rf"\p{{Script={name}}}")
            except regex.error:
                raise ValueError(f"'{name}' is not a Unicode script name (e.g. Latin, Hangul, Han)") from None
        return scripts

    @model_validator(mode="after")
    def _scorer_inputs_present(self) -> ProbeSpec:
        if not self.scorers and not self.assertions:
            raise ValueError("a probe needs 'scorers' or [[probe.assert]] checks")
        if "known_answer" in self.scorers and self.answer is None:
            raise ValueError("scorer 'known_answer' needs an [probe.answer] table")
        if "code_syntax" in self.scorers and self.code_language is None:
            raise ValueError("scorer 'code_syntax' needs 'code_language'")
        if "determinism" in self.scorers and self.temperature != 0.0:
            raise ValueError("scorer 'determinism' needs temperature = 0")
        if "argmax_conformance" in self.scorers and not (self.logprobs and self.top_logprobs >= 1):
            raise ValueError("scorer 'argmax_conformance' needs logprobs = true and top_logprobs >= 1")
        if "long_context_recall" in self.scorers and self.needle is None:
            raise ValueError("scorer 'long_context_recall' needs a [probe.needle] table")
        if self.needle is not None and self.context_tokens is None:
            raise ValueError("a [probe.needle] table needs 'context_tokens' (the haystack size)")
        return self


class ProbeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: bool = False
    defaults: dict[str, Any] = {}
    probe: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Prompts:
    """The exact text a probe sends: the chat user message and the completion-style prompt."""

    chat: str
    completion: str


def build_haystack(needle: NeedleSpec, context_tokens: int, question_chars: int) -> str:
    """Filler sentences, numbered and cycled, with the needle at ``depth``, about ``context_tokens`` long.

    Deterministic: the same needle and size always give the same text (the version hash covers
    it anyway, so a change to this function makes new probe versions rather than silently
    changing what an old version meant).
    """
    budget = max(
        0, context_tokens * CHARS_PER_TOKEN - question_chars - len(needle.statement) - len(needle.preamble)
    )
    parts: list[str] = []
    used = 0
    index = 0
    while used < budget:
        sentence = f"({index + 1}) {needle.filler[index % len(needle.filler)]}"
        parts.append(sentence)
        used += len(sentence) + 1
        index += 1
    at = round(needle.depth * len(parts))
    parts.insert(at, needle.statement)
    return " ".join(parts)


def render_prompts(spec: ProbeSpec) -> Prompts:
    """The chat and completion-style prompts for ``spec``, haystack included for needle probes."""
    completion = spec.completion_prompt or f"{spec.prompt}\n\n"
    if spec.needle is None or spec.context_tokens is None:
        return Prompts(chat=spec.prompt, completion=completion)
    haystack = build_haystack(spec.needle, spec.context_tokens, len(spec.prompt))
    document = f"{spec.needle.preamble}\n\n<document>\n{haystack}\n</document>\n\n"
    return Prompts(chat=document + spec.prompt, completion=document + completion)


@dataclass(frozen=True, slots=True)
class Probe:
    """A catalog probe: its spec, the set it belongs to and its content version.

    ``prompts`` is rendered once at load (:meth:`from_spec`); a probe built by hand without it
    renders on demand. ``turn`` is the probe's place in a session set (0 for the first turn) and
    None for an ordinary probe.
    """

    spec: ProbeSpec
    probe_set: str
    version: str
    source: str
    prompts: Prompts | None = None
    turn: int | None = None

    @classmethod
    def from_spec(
        cls,
        spec: ProbeSpec,
        probe_set: str,
        source: str = "",
        *,
        turn: int | None = None,
        previous: str | None = None,
    ) -> Probe:
        """A probe and its content version; a session turn also names the previous turn's version."""
        prompts = render_prompts(spec)
        return cls(
            spec=spec,
            probe_set=probe_set,
            version=content_version(spec, prompts, turn=turn, previous=previous),
            source=source,
            prompts=prompts,
            turn=turn,
        )

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def prompt(self) -> str:
        """The chat user message exactly as sent (the haystack and question for needle probes)."""
        return (self.prompts or render_prompts(self.spec)).chat

    @property
    def completion_prompt(self) -> str:
        """The completion-style (base model) prompt exactly as sent."""
        return (self.prompts or render_prompts(self.spec)).completion

    def request(
        self, mode: Mode, *, session_key: str | None = None, history: Sequence[tuple[Probe, str]] = ()
    ) -> ProbeRequest:
        """The request for a chat or completion-style endpoint.

        ``history`` is a session turn's conversation so far: each earlier turn and the answer
        the conversation went on with. In chat mode it becomes alternating user and assistant
        messages before this turn's prompt (the system prompt is this turn's own). In completion
        mode the prompt is a transcript: each earlier turn's completion prompt, its answer with
        trailing whitespace removed and a blank line, then this turn's completion prompt.
        """
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
            transcript = "".join(f"{turn.completion_prompt}{answer.rstrip()}\n\n" for turn, answer in history)
            return ProbeRequest(mode="completion", prompt=transcript + self.completion_prompt, **common)
        messages = [
            m
            for turn, answer in history
            for m in (Message("user", turn.prompt), Message("assistant", answer))
        ]
        return ProbeRequest(
            mode="chat", messages=(*messages, Message("user", self.prompt)), system=s.system, **common
        )


def content_version(
    spec: ProbeSpec, prompts: Prompts | None = None, *, turn: int | None = None, previous: str | None = None
) -> str:
    """A stable hash of everything that defines the probe (16 hex digits of SHA-256).

    It covers the spec and the rendered prompts, so a change in how a haystack is built also
    makes a new version. A session turn (``turn`` not None) also covers its place and the
    version of the turn before it (``previous``), which chains every earlier turn into it. An
    ordinary probe's hash is exactly what it was before sessions existed, so stored versions stay.
    """
    prompts = prompts or render_prompts(spec)
    content: dict[str, Any] = {
        # Without checks, the spec hashes as it did before probes had them, so stored versions stay.
        "spec": spec.model_dump(mode="json", exclude=None if spec.assertions else {"assertions"}),
        "chat": prompts.chat,
        "completion": prompts.completion,
    }
    if turn is not None:
        content["session"] = {"turn": turn, "previous": previous}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def select_probes(probes: Sequence[Probe], patterns: Patterns) -> list[Probe]:
    """The probes whose id or set the globs select (:mod:`canary.config.globs`), in order.

    ``"code-*,!code-sql"`` selects every code set but SQL; a pattern of exclusions alone
    starts from every probe. A session set is selected whole: when any of its turns is
    selected, all of them are (a turn means nothing without the turns before it).
    """
    selection = Selection.parse(patterns)
    if selection.everything:
        return list(probes)
    chosen = {p.id for p in probes if selection.matches(p.id, p.probe_set)}
    sessions = {p.probe_set for p in probes if p.turn is not None and p.id in chosen}
    return [p for p in probes if p.id in chosen or (p.turn is not None and p.probe_set in sessions)]


@dataclass(frozen=True)
class Catalog:
    probes: tuple[Probe, ...]

    def select(self, patterns: Patterns) -> list[Probe]:
        """The probes ``patterns`` select (all when None); see :func:`select_probes`."""
        return select_probes(self.probes, patterns)

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
    if parsed.session and len(parsed.probe) < 2:
        raise ConfigError(path, "probe", "a session set needs at least 2 probes (its turns, in file order)")
    probes: list[Probe] = []
    for index, entry in enumerate(parsed.probe):
        merged = {**parsed.defaults, **entry}
        if "assertions" in merged:  # the field's own name would skip the checks' parsing below
            raise ConfigError(path, f"probe[{index}].assertions", "unknown key (checks are [[probe.assert]])")
        merged["assert"] = parse_assertions(merged.get("assert", []), path, f"probe[{index}].assert")
        spec = validate(ProbeSpec, merged, path, prefix=f"probe[{index}]")
        if not parsed.session:
            probes.append(Probe.from_spec(spec, probe_set=path.stem, source=str(path)))
            continue
        if spec.repeat != 1:
            raise ConfigError(
                path,
                f"probe[{index}].repeat",
                "a session turn is sent once per conversation: repeat must be 1 "
                "(a cell's 'sessions' sets how many conversations run)",
            )
        previous = probes[-1].version if probes else None
        probes.append(Probe.from_spec(spec, path.stem, str(path), turn=index, previous=previous))
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
                raise ConfigError(
                    path, f"probe id '{probe.id}'", f"duplicate id, also defined in {seen[probe.id]}"
                )
            seen[probe.id] = str(path)
            probes.append(probe)
    return Catalog(tuple(probes))
