"""The matching of declared checks (``[[probe.assert]]``): textbook cases for each type."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from canary.probing.assertions import Assertion
from canary.probing.catalog import Probe, ProbeSpec, load_catalog
from canary.probing.completion import Completion
from canary.scoring import ScoringContext, score_completion, score_each
from canary.scoring.assertions import parse_json, score_assertion

EXAMPLES = load_catalog(Path(__file__).resolve().parents[2] / "examples" / "probes")
CHECK = TypeAdapter(Assertion)


def judged(check: dict[str, Any], text: str = "", **completion: Any) -> bool | None:
    """Whether ``check`` passes on a completion of ``text``; None when it gives no score."""
    scores = score_assertion(
        CHECK.validate_python({"metric": "m", **check}), Completion(True, text, **completion)
    )
    assert [s.metric for s in scores] in ([], ["m"])
    return scores[0].passed if scores else None


@pytest.mark.parametrize(
    ("check", "text", "passed"),
    [
        ({"type": "equals", "value": "Paris"}, "  Paris\n", True),
        ({"type": "equals", "value": "Paris"}, "paris", False),
        ({"type": "equals", "value": "Paris", "ignore_case": True}, "PARIS", True),
        ({"type": "starts_with", "value": "Hello"}, "\n Hello there", True),
        ({"type": "starts_with", "value": ["Hi", "Hey"]}, "Hello there", False),
        ({"type": "contains", "value": ["30 days", "receipt"]}, "within 30 days, with a receipt", True),
        ({"type": "contains", "value": ["30 days", "receipt"]}, "within 30 days", False),
        ({"type": "contains", "value": ["30 days", "receipt"], "mode": "any"}, "within 30 days", True),
        ({"type": "contains", "value": "RECEIPT", "ignore_case": True}, "a receipt", True),
        ({"type": "not_contains", "value": ["sorry", "cannot"]}, "I cannot", False),
        ({"type": "not_contains", "value": ["sorry", "cannot"]}, "Sure.", True),
        ({"type": "not_contains", "value": ["sorry", "cannot"], "mode": "all"}, "I cannot", True),
        ({"type": "not_contains", "value": ["sorry", "cannot"], "mode": "all"}, "sorry, I cannot", False),
        ({"type": "regex", "pattern": r"\b\d{4}\b"}, "born in 1815", True),
        ({"type": "regex", "pattern": r"^\d+$"}, "42 apples", False),
        ({"type": "not_regex", "pattern": r"\p{Thai}"}, "Paris สวัสดี", False),
        ({"type": "not_regex", "pattern": r"\p{Thai}"}, "Paris", True),
        ({"type": "max_chars", "value": 5}, "12345", True),
        ({"type": "max_chars", "value": 5}, "123456", False),
        ({"type": "levenshtein_max", "value": "kitten", "max_distance": 3}, "sitting", True),
        ({"type": "levenshtein_max", "value": "kitten", "max_distance": 2}, "sitting", False),
        (
            {"type": "levenshtein_max", "value": "Kitten", "max_distance": 0, "ignore_case": True},
            "kitten",
            True,
        ),
    ],
)
def test_each_text_check_decides_as_documented(check: dict[str, Any], text: str, passed: bool) -> None:
    assert judged(check, text) is passed


SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 1}}}


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ('{"n": 3}', True),
        ('Here it is:\n```json\n{"n": 3}\n```\n', True),
        ('{"n": 0}', False),
        ('{"m": 3}', False),
        ("not json", False),
        ('{"n": 3', False),
    ],
)
def test_json_schema_takes_the_whole_answer_or_its_first_fenced_block(text: str, passed: bool) -> None:
    assert judged({"type": "json_schema", "schema": SCHEMA}, text) is passed


def test_a_json_schema_failure_says_where_and_why() -> None:
    check = CHECK.validate_python({"metric": "m", "type": "json_schema", "schema": SCHEMA})
    [score] = score_assertion(check, Completion(True, '{"n": 0}'))
    assert score.detail["at"] == "/n"
    assert "less than the minimum of 1" in score.detail["error"]
    assert "schema" not in score.detail  # the probe version stores it once


def test_json_schema_formats_are_checked() -> None:
    check = {"type": "json_schema", "schema": {"type": "string", "format": "date"}}
    assert judged(check, '"2025-08-29"') is True
    assert judged(check, '"29/08/2025"') is False


def test_parse_json_finds_no_document_in_prose() -> None:
    assert parse_json("The answer is yes.") == (False, None)


def test_token_latency_and_finish_reason_checks_read_the_completion() -> None:
    assert judged({"type": "max_tokens", "value": 10}, output_tokens=10) is True
    assert judged({"type": "max_tokens", "value": 10}, output_tokens=11) is False
    assert judged({"type": "max_tokens", "value": 10}) is None  # no count: not judged
    assert judged({"type": "latency_ms_max", "value": 500}, latency_s=0.4) is True
    assert judged({"type": "latency_ms_max", "value": 500}, latency_s=0.6) is False
    assert judged({"type": "finish_reason", "value": "stop"}, finish_reason="end_turn") is True  # Anthropic
    assert judged({"type": "finish_reason", "value": "stop"}, finish_reason="STOP") is True  # Vertex
    assert judged({"type": "finish_reason", "value": "stop"}, finish_reason="max_tokens") is False
    assert judged({"type": "finish_reason", "value": ["stop", "length"]}, finish_reason="length") is True
    assert judged({"type": "finish_reason", "value": "stop"}) is None


def test_a_failed_check_stores_what_was_expected_and_what_came_back() -> None:
    check = CHECK.validate_python({"metric": "refund", "type": "contains", "value": ["30 days", "receipt"]})
    [score] = score_assertion(check, Completion(True, "Refunds within 30 days."))
    assert not score.passed and score.value == 1.0
    assert score.detail == {
        "type": "contains",
        "value": ["30 days", "receipt"],
        "ignore_case": False,
        "answer": "Refunds within 30 days.",
        "found": ["30 days"],
    }


def test_a_pathological_pattern_fails_the_check_instead_of_stalling_the_pass() -> None:
    check = CHECK.validate_python({"metric": "m", "type": "regex", "pattern": r"(a|aa)+b"})
    [score] = score_assertion(check, Completion(True, "a" * 40))
    assert not score.passed and score.detail["error"] == "pattern timed out"


def test_checks_run_after_the_scorers_under_their_own_metric_names() -> None:
    probe = EXAMPLES.by_id("support-refund-window")
    scores, failed = score_each(probe, Completion(True, "Sorry, no refunds."), ScoringContext())
    assert failed == {}
    assert [(s.metric, s.passed) for s in scores] == [
        ("answered", True),
        ("unexpected_script", True),
        ("refund-policy", False),
        ("no-apology", False),
        ("one-sentence", True),
    ]


@pytest.mark.parametrize("probe", EXAMPLES.probes, ids=lambda p: p.id)
def test_every_example_reference_answer_passes_its_checks(probe: Probe) -> None:
    text = probe.spec.reference_answer
    scores = score_completion(probe, Completion(True, text, finish_reason="stop", latency_s=0.2))
    assert {s.metric for s in scores} >= {a.metric for a in probe.spec.assertions}
    assert [s for s in scores if not s.passed] == []


def test_a_failed_run_gets_no_check_scores() -> None:
    probe = EXAMPLES.by_id("support-greeting")
    assert score_completion(probe, Completion(False, "")) == []


PROBES_WITH_EVERY_TYPE = Probe.from_spec(
    ProbeSpec.model_validate(
        {
            "id": "all",
            "prompt": "p",
            "reference_answer": "r",
            "assert": [
                {"metric": f"m{i}", **check}
                for i, check in enumerate(
                    [
                        {"type": "equals", "value": "x"},
                        {"type": "starts_with", "value": "x"},
                        {"type": "contains", "value": ["{", "x"]},
                        {"type": "not_contains", "value": "x"},
                        {"type": "regex", "pattern": r"\d+"},
                        {"type": "not_regex", "pattern": r"\p{Han}"},
                        {"type": "json_schema", "schema": SCHEMA},
                        {"type": "max_chars", "value": 3},
                        {"type": "max_tokens", "value": 3},
                        {"type": "latency_ms_max", "value": 3},
                        {"type": "levenshtein_max", "value": "xyz", "max_distance": 1},
                        {"type": "finish_reason", "value": "stop"},
                    ]
                )
            ],
        }
    ),
    "all",
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(), reason=st.one_of(st.none(), st.text(max_size=10)))
def test_no_check_raises_on_arbitrary_text_and_every_detail_is_storable(
    text: str, reason: str | None
) -> None:
    completion = Completion(True, text, finish_reason=reason, output_tokens=len(text))
    scores, failed = score_each(PROBES_WITH_EVERY_TYPE, completion, ScoringContext())
    assert failed == {}
    assert len(scores) == 1 + 12 - (reason is None)  # answered, then each check
    for score in scores:
        assert score.value is None or math.isfinite(score.value)
        encoded = json.dumps(score.detail, allow_nan=False, ensure_ascii=False)
        encoded.encode("utf-8")
        assert "\\u0000" not in encoded
