"""Checks declared in a probe file: ``[[probe.assert]]`` tables, each a Bernoulli metric named by the user.

A probe may carry checks that need no code next to its prompt::

    [[probe.assert]]
    metric = "refund-policy"          # the metric it reports, like a scorer's name
    type = "contains"
    value = ["30 days", "receipt"]
    mode = "all"                      # any | all

This module is the schema: one model per family of checks, validated at load so that a bad
check names its file and key (``probes/x.toml: probe[3].assert[0].pattern: …``) before anything
runs. The matching itself is pure and lives in :mod:`canary.scoring.assertions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, field_validator

from canary.config.validation import validate
from canary.errors import ConfigError

KNOWN_SCORERS = frozenset(
    {
        "answered",
        "routing",
        "unexpected_script",
        "code_syntax",
        "known_answer",
        "determinism",
        "argmax_conformance",
        "long_context_recall",
    }
)
"""Names a probe may list in ``scorers``; a test keeps this equal to ``canary.scoring.SCORERS``.

Kept in the probing package rather than imported so that the catalog does not depend on the
scoring package (which depends on the catalog)."""

RESERVED_METRICS = KNOWN_SCORERS | {"availability", "request_errors", "latency_ms"}
"""Metric names a check may not take: the scorers', and those detection (request errors as
``availability``) and verdicts (``request_errors``, ``latency_ms``) give their own series. A test
keeps the last three equal to the constants downstream."""

METRIC_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


class AssertionBase(BaseModel):
    """What every check has: the metric it reports."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    metric: str = Field(pattern=METRIC_NAME, max_length=100)
    type: str  # each kind narrows it to its own names

    @field_validator("metric")
    @classmethod
    def _metric_not_reserved(cls, metric: str) -> str:
        if metric in RESERVED_METRICS:
            raise ValueError(f"'{metric}' is a built-in metric; choose another name for this assertion")
        return metric


class EqualsAssertion(AssertionBase):
    """The answer, stripped of surrounding whitespace, equals ``value``."""

    type: Literal["equals"]
    value: str
    ignore_case: bool = False


class StartsWithAssertion(AssertionBase):
    """The answer, leading whitespace removed, starts with ``value`` (or one of a list)."""

    type: Literal["starts_with"]
    value: str | tuple[str, ...]
    ignore_case: bool = False


class ContainsAssertion(AssertionBase):
    """``contains``: the answer holds all (``mode = "all"``, the default) or any of the values.

    ``not_contains`` is its negation: it fails when any value appears (``mode = "any"``, the
    default), or with ``mode = "all"`` only when all of them do.
    """

    type: Literal["contains", "not_contains"]
    value: str | tuple[str, ...]
    mode: Literal["any", "all"] | None = None
    ignore_case: bool = False

    @field_validator("value")
    @classmethod
    def _values_not_empty(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        values = (value,) if isinstance(value, str) else value
        if not values or any(v == "" for v in values):
            raise ValueError("needs at least one value, none of them empty")
        return value

    @property
    def effective_mode(self) -> Literal["any", "all"]:
        return self.mode or ("all" if self.type == "contains" else "any")


class RegexAssertion(AssertionBase):
    """``regex``: ``pattern`` (the ``regex`` module's syntax) is found; ``not_regex``: it is not."""

    type: Literal["regex", "not_regex"]
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class JsonSchemaAssertion(AssertionBase):
    """The answer (or its first fenced code block) is JSON valid against ``schema``."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _schema_valid(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise ValueError(
                f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
            ) from None
        return schema


class LimitAssertion(AssertionBase):
    """``max_chars`` (answer length), ``max_tokens`` (output tokens the API reports) or
    ``latency_ms_max`` (the request's latency) is at most ``value``."""

    type: Literal["max_chars", "max_tokens", "latency_ms_max"]
    value: float = Field(ge=0)


class LevenshteinAssertion(AssertionBase):
    """The answer, stripped, is within ``max_distance`` edits (Levenshtein) of ``value``."""

    type: Literal["levenshtein_max"]
    value: str
    max_distance: int = Field(ge=0)
    ignore_case: bool = False


class FinishReasonAssertion(AssertionBase):
    """The API's finish reason is ``value`` (or one of a list), after mapping each API's names
    onto OpenAI's (``end_turn``, ``stop_sequence``, ``STOP`` -> ``stop``; ``max_tokens`` -> ``length``)."""

    type: Literal["finish_reason"]
    value: str | tuple[str, ...]


Assertion = Annotated[
    EqualsAssertion
    | StartsWithAssertion
    | ContainsAssertion
    | RegexAssertion
    | JsonSchemaAssertion
    | LimitAssertion
    | LevenshteinAssertion
    | FinishReasonAssertion,
    Field(discriminator="type"),
]

ASSERTION_TYPES: dict[str, type[AssertionBase]] = {
    "equals": EqualsAssertion,
    "starts_with": StartsWithAssertion,
    "contains": ContainsAssertion,
    "not_contains": ContainsAssertion,
    "regex": RegexAssertion,
    "not_regex": RegexAssertion,
    "json_schema": JsonSchemaAssertion,
    "max_chars": LimitAssertion,
    "max_tokens": LimitAssertion,
    "latency_ms_max": LimitAssertion,
    "levenshtein_max": LevenshteinAssertion,
    "finish_reason": FinishReasonAssertion,
}
"""Each ``type`` a check may have -> its model."""


def parse_assertions(raw: Any, path: Path | str, prefix: str) -> tuple[AssertionBase, ...]:
    """A probe's ``assert`` list validated, each entry by the model of its ``type``.

    Errors name the entry's key (``probe[3].assert[0].pattern``); two checks of one probe may
    not report the same metric (its runs would count twice).
    """
    if not isinstance(raw, list):
        raise ConfigError(path, prefix, "must be a list of [[probe.assert]] tables")
    assertions: list[AssertionBase] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        key = f"{prefix}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, key, "must be a table")
        kind = entry.get("type")
        if kind is None:
            raise ConfigError(
                path, f"{key}.type", f"required key is missing (one of: {', '.join(ASSERTION_TYPES)})"
            )
        if not isinstance(kind, str) or kind not in ASSERTION_TYPES:
            raise ConfigError(
                path, f"{key}.type", f"unknown assertion type {kind!r} (known: {', '.join(ASSERTION_TYPES)})"
            )
        assertion = validate(ASSERTION_TYPES[kind], entry, path, prefix=key)
        if assertion.metric in seen:
            raise ConfigError(
                path,
                f"{key}.metric",
                f"'{assertion.metric}' is already the metric of {prefix}[{seen[assertion.metric]}]",
            )
        seen[assertion.metric] = index
        assertions.append(assertion)
    return tuple(assertions)
