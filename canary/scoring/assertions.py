"""The checks a probe file declares (``[[probe.assert]]``), each scored as the metric it names.

The schema is :mod:`canary.probing.assertions`; this is the matching, on well-kept libraries:
``regex`` for patterns (with a timeout, so a pathological answer cannot stall a pass),
``jsonschema`` for schemas, ``rapidfuzz`` for edit distances. Each check gives one
:class:`Score` named by its ``metric``, with the measured quantity as ``value`` where there is
one, and on failure a ``detail`` saying what was expected and what came back. A check that
cannot be judged on a completion (``max_tokens`` without a token count, ``finish_reason`` the
API did not report) gives no score, as ``routing`` does without a served-by header.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import regex
from jsonschema import FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from rapidfuzz.distance import Levenshtein

from canary.probing.assertions import (
    AssertionBase,
    ContainsAssertion,
    EqualsAssertion,
    FinishReasonAssertion,
    JsonSchemaAssertion,
    LevenshteinAssertion,
    LimitAssertion,
    RegexAssertion,
    StartsWithAssertion,
)
from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring._text import clip
from canary.scoring.base import Score, ScoringContext

REGEX_TIMEOUT_S = 0.1
_FENCED = regex.compile(r"```[\w+-]*[ \t]*\n(.*?)```", regex.DOTALL)
FINISH_REASONS = {
    "end_turn": "stop",  # Anthropic
    "stop_sequence": "stop",
    "max_tokens": "length",  # Anthropic, Bedrock and Vertex (upper-cased there)
    "tool_use": "tool_calls",
}


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def finish_reason(raw: str) -> str:
    """An API's finish reason in OpenAI's words (``stop``, ``length``, ``tool_calls``, …)."""
    folded = raw.casefold()
    return FINISH_REASONS.get(folded, folded)


@lru_cache(maxsize=256)
def _schema_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return validator_for(schema)(schema, format_checker=FormatChecker())


def parse_json(text: str) -> tuple[bool, Any]:
    """(found, document): the whole answer as JSON, else its first fenced code block."""
    candidates = [text.strip(), *(m.strip() for m in _FENCED.findall(text)[:1])]
    for candidate in candidates:
        try:
            return True, json.loads(candidate)
        except ValueError:
            continue
    return False, None


def _schema_problem(assertion: JsonSchemaAssertion, text: str) -> dict[str, Any] | None:
    found, document = parse_json(text)
    if not found:
        return {"error": "not JSON"}
    validator = _schema_validator(json.dumps(assertion.json_schema, sort_keys=True))
    error = best_match(validator.iter_errors(document))
    if error is None:
        return None
    return {"error": clip(str(error.message), 200), "at": "/" + "/".join(str(p) for p in error.absolute_path)}


def _contains(assertion: ContainsAssertion, text: str) -> tuple[bool, list[str]]:
    """(passed, the values found) for ``contains`` and ``not_contains``."""
    haystack = _fold(text, assertion.ignore_case)
    values = _values(assertion.value)
    found = [v for v in values if _fold(v, assertion.ignore_case) in haystack]
    holds = len(found) == len(values) if assertion.effective_mode == "all" else bool(found)
    return (holds if assertion.type == "contains" else not holds), found


def judge(
    assertion: AssertionBase, completion: Completion
) -> tuple[bool, float | None, dict[str, Any]] | None:
    """(passed, value, what went wrong) for one check on one completion; None when it cannot be judged.

    Never raises on arbitrary text.
    """
    text = completion.text
    if isinstance(assertion, EqualsAssertion):
        ignore = assertion.ignore_case
        return _fold(text.strip(), ignore) == _fold(assertion.value.strip(), ignore), None, {}
    if isinstance(assertion, StartsWithAssertion):
        start = _fold(text.lstrip(), assertion.ignore_case)
        return (
            any(start.startswith(_fold(v, assertion.ignore_case)) for v in _values(assertion.value)),
            None,
            {},
        )
    if isinstance(assertion, ContainsAssertion):
        passed, found = _contains(assertion, text)
        return passed, float(len(found)), {"found": found}
    if isinstance(assertion, RegexAssertion):
        try:
            match = regex.search(assertion.pattern, text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            return False, None, {"error": "pattern timed out"}
        detail = {} if match is None else {"match": clip(match.group(), 80)}
        return (match is not None) == (assertion.type == "regex"), None, detail
    if isinstance(assertion, JsonSchemaAssertion):
        problem = _schema_problem(assertion, text)
        return problem is None, None, problem or {}
    if isinstance(assertion, LimitAssertion):
        measured = _measure(assertion, completion)
        return None if measured is None else (measured <= assertion.value, measured, {})
    if isinstance(assertion, LevenshteinAssertion):
        ignore = assertion.ignore_case
        a, b = _fold(text.strip(), ignore), _fold(assertion.value.strip(), ignore)
        # With a cut-off the distance stops at max + 1: a runaway answer costs no more than a near one.
        distance = Levenshtein.distance(a, b, score_cutoff=assertion.max_distance)
        return distance <= assertion.max_distance, float(distance), {}
    if isinstance(assertion, FinishReasonAssertion):
        if completion.finish_reason is None:
            return None
        got = finish_reason(completion.finish_reason)
        wanted = {finish_reason(v) for v in _values(assertion.value)}
        return got in wanted, None, {"got": clip(completion.finish_reason)}
    raise TypeError(f"no matcher for assertion type {type(assertion).__name__}")


def _measure(assertion: LimitAssertion, completion: Completion) -> float | None:
    if assertion.type == "max_chars":
        return float(len(completion.text))
    if assertion.type == "latency_ms_max":
        return completion.latency_s * 1000.0
    if completion.output_tokens is not None:
        return float(completion.output_tokens)
    return None if completion.tokens is None else float(len(completion.tokens))


def score_assertion(assertion: AssertionBase, completion: Completion) -> list[Score]:
    """The check's score, named by its metric (none when it cannot be judged)."""
    judged = judge(assertion, completion)
    if judged is None:
        return []
    passed, value, extra = judged
    if passed:
        return [Score(assertion.metric, True, value, {})]
    # What was expected, as written (a schema is left out: the probe version stores it once).
    expected = assertion.model_dump(
        mode="json", by_alias=True, exclude={"metric", "json_schema"}, exclude_none=True
    )
    detail = {**expected, "answer": clip(completion.text.strip()), **extra}
    return [Score(assertion.metric, False, value, detail)]


class AssertionScorer:
    """One declared check as a scorer (the registry runs each on its own, under its metric name)."""

    def __init__(self, assertion: AssertionBase) -> None:
        self.assertion = assertion
        self.name = assertion.metric

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        return score_assertion(self.assertion, completion)
