"""known_answer: exact, case-folded, regex, numeric and multiple-choice graders."""

from __future__ import annotations

from typing import Any

import pytest

from canary.probing.catalog import AnswerSpec, Probe, ProbeSpec
from canary.probing.completion import Completion
from canary.scoring.base import Score, ScoringContext
from canary.scoring.known_answer import KnownAnswerScorer, parse_number, pick_choice


def _score(text: str, **answer: Any) -> Score:
    spec = ProbeSpec(
        id="t", prompt="p", reference_answer="r", scorers=("known_answer",), answer=AnswerSpec(**answer)
    )
    [score] = KnownAnswerScorer().score(
        Probe.from_spec(spec, "t"), Completion(ok=True, text=text), ScoringContext()
    )
    return score


def test_exact_passes_only_on_the_exact_text_apart_from_surrounding_whitespace() -> None:
    assert _score("  Paris\n", kind="exact", value="Paris").passed
    assert not _score("paris", kind="exact", value="Paris").passed
    assert not _score("Paris.", kind="exact", value="Paris").passed


def test_casefold_ignores_case_whitespace_and_wrapping_punctuation() -> None:
    assert _score("**PARIS.**", kind="casefold", value="Paris").passed
    assert _score('"New   York"', kind="casefold", value="new york").passed
    assert _score("Straße", kind="casefold", value="STRASSE").passed


def test_casefold_fails_on_a_different_or_longer_answer() -> None:
    score = _score("Lyon", kind="casefold", value="Paris")
    assert not score.passed
    assert score.detail == {"kind": "casefold", "expected": "Paris", "answer": "Lyon"}
    assert not _score("Paris, France", kind="casefold", value="Paris").passed


def test_regex_searches_the_answer() -> None:
    assert _score("It was in 1969, July.", kind="regex", pattern=r"\b1969\b").passed
    assert not _score("It was in 1968.", kind="regex", pattern=r"\b1969\b").passed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("391", 391.0),
        ("The answer is 391.", 391.0),
        ("17 × 23 = 391", 391.0),
        ("1,234,567", 1234567.0),
        ("-12.5", -12.5),
        ("−7", -7.0),
        ("about 6.02e23 molecules", 6.02e23),
        ("no digits here", None),
    ],
)
def test_numbers_are_read_from_the_whole_answer_or_its_last_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


def test_numeric_passes_within_tolerance_and_fails_outside_it() -> None:
    assert _score("3.1416", kind="numeric", value=3.14159, tolerance=0.001).passed
    score = _score("3.15", kind="numeric", value=3.14159, tolerance=0.001)
    assert not score.passed
    assert score.detail["got"] == 3.15


def test_numeric_with_a_corrupted_digit_fails() -> None:
    assert not _score("The product is 39l.", kind="numeric", value=391).passed


def test_numeric_without_any_number_fails_with_got_none() -> None:
    score = _score("I don't know.", kind="numeric", value=4)
    assert not score.passed
    assert score.detail["got"] is None


@pytest.mark.parametrize("text", ["B", "B) Paris", "(B)", "**B.** Paris is the capital.", "The answer is B."])
def test_choice_reads_the_picked_letter(text: str) -> None:
    assert _score(text, kind="choice", value="B", choices=("A", "B", "C", "D")).passed


def test_choice_does_not_mistake_the_article_a_for_option_a() -> None:
    assert pick_choice("It is a city in France: C", ("A", "B", "C", "D")) == "C"


def test_choice_naming_two_options_without_committing_fails() -> None:
    assert pick_choice("Either B or C could be right.", ("A", "B", "C", "D")) is None
    assert not _score("Either B or C.", kind="choice", value="B", choices=("A", "B", "C", "D")).passed


def test_choice_of_words_is_case_insensitive() -> None:
    assert _score("Yes, it is.", kind="choice", value="yes", choices=("yes", "no")).passed
    assert not _score("No.", kind="choice", value="yes", choices=("yes", "no")).passed


def test_wrong_choice_reports_what_was_picked() -> None:
    score = _score("D", kind="choice", value="B", choices=("A", "B", "C", "D"))
    assert not score.passed
    assert score.detail["got"] == "D"


def test_a_probe_without_an_answer_table_gets_no_score() -> None:
    spec = ProbeSpec(id="t", prompt="p", reference_answer="r", scorers=("answered",))
    assert (
        KnownAnswerScorer().score(Probe.from_spec(spec, "t"), Completion(ok=True, text="x"), ScoringContext())
        == []
    )
