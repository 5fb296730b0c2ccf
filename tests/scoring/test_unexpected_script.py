"""unexpected_script: foreign letters are flagged; punctuation, symbols, emoji and code are not."""

from __future__ import annotations

import json

import pytest

from canary.probing.catalog import Probe, ProbeSpec
from canary.probing.completion import Completion
from canary.scoring.base import Score, ScoringContext
from canary.scoring.unexpected_script import UnexpectedScriptScorer


def _score(text: str, allowed: tuple[str, ...] = ("Latin",)) -> Score:
    spec = ProbeSpec(
        id="t", prompt="p", reference_answer="r", scorers=("unexpected_script",), allowed_scripts=allowed
    )
    [score] = UnexpectedScriptScorer().score(
        Probe.from_spec(spec, "test"), Completion(ok=True, text=text), ScoringContext()
    )
    return score


def test_thai_inside_english_prose_is_flagged() -> None:
    text = "The weather in Paris is mild สวัสดี in spring."
    score = _score(text)
    assert not score.passed
    assert score.value == 6.0
    [span] = score.detail["spans"]
    assert span["script"] == "Thai"
    assert span["text"] == "สวัสดี"
    assert text[span["start"] : span["end"]] == "สวัสดี"
    assert "Paris is mild สวัสดี in" in span["context"]


def test_han_inside_an_english_code_comment_is_flagged() -> None:
    text = "```python\ndef add(a, b):\n    # add the two 数字 together\n    return a + b\n```"
    score = _score(text)
    assert not score.passed
    assert score.detail["scripts"] == {"Han": 2}


def test_clean_english_prose_passes_with_value_zero() -> None:
    score = _score("Water boils at 100 °C at sea level; that's 212 °F.")
    assert score.passed
    assert score.value == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "Great job! 🎉👍🏽 See you soon 👩‍💻 🇫🇷",
        "For all x ∈ ℝ, ∑ xᵢ ≤ ∞ and √4 = 2 ± 0, 3 × 4 ÷ 2 ≠ 5 ⇒ ∀𝜀 > 0.",
        "She said “hello” — and ‘goodbye’… «bien» „gut“",
        "```python\nfor item_count in range(10):\n    total_sum += item_count  # running total\n```",
        "const parseUser = (rawJson) => JSON.parse(rawJson).userName;",
        "Café naïve résumé Dvořák Zoë Łódź Ångström façade",
        "Ｆｕｌｌｗｉｄｔｈ Latin letters and combining e\u0301 marks",
    ],
)
def test_emoji_math_quotes_code_and_accented_latin_are_not_flagged(text: str) -> None:
    assert _score(text).passed


def test_greek_letters_are_a_script_that_math_probes_must_allow() -> None:
    # π is a Greek letter, not a math symbol (𝜋, MATHEMATICAL ITALIC SMALL PI, is Common).
    assert _score("The area is π r².").detail["scripts"] == {"Greek": 1}
    assert _score("The area is π r².", ("Latin", "Greek")).passed
    assert _score("The area is 𝜋 r².").passed


def test_cjk_punctuation_in_english_is_common_script_and_not_flagged() -> None:
    # Ideographic full stop and comma, corner brackets: Script=Common, shared by every script.
    assert _score("The answer is yes。 Also、see 「this」 note！").passed


def test_a_cyrillic_homoglyph_inside_a_latin_word_is_flagged() -> None:
    score = _score("The capital is Pаris.")  # U+0430 CYRILLIC SMALL LETTER A
    assert not score.passed
    assert score.detail["spans"][0]["script"] == "Cyrillic"


def test_a_mixed_script_name_is_flagged_only_for_the_script_not_allowed() -> None:
    text = "The film was directed by Bong Joon-ho (봉준호) and scored by 久石譲."
    english = _score(text)
    assert english.detail["scripts"] == {"Hangul": 3, "Han": 3}
    assert _score(text, ("Latin", "Hangul")).detail["scripts"] == {"Han": 3}
    assert _score(text, ("Latin", "Hangul", "Han")).passed


def test_korean_answer_with_latin_terms_passes_when_both_are_allowed() -> None:
    assert _score(
        "서울은 대한민국의 수도입니다. Seoul (서울)은 약 950만 명이 삽니다.", ("Hangul", "Latin")
    ).passed


def test_japanese_answer_with_prolonged_sound_mark_passes() -> None:
    text = "東京は日本の首都です。コーヒーを飲みましょう。"
    assert _score(text, ("Hiragana", "Katakana", "Han", "Latin")).passed


def test_adjacent_scripts_in_one_run_are_reported_as_separate_spans() -> None:
    score = _score("bad สวัส漢字 output")
    assert [s["script"] for s in score.detail["spans"]] == ["Thai", "Han"]
    assert score.value == 6.0


def test_spans_listed_are_capped_but_the_count_covers_every_character() -> None:
    text = " ".join(["word ก"] * 50)
    score = _score(text)
    assert score.value == 50.0
    assert len(score.detail["spans"]) == 5
    assert score.detail["scripts"] == {"Thai": 50}


def test_detail_is_json_serialisable_even_with_lone_surrogates_and_nul() -> None:
    score = _score("x \ud800 y \x00 ก")
    assert not score.passed
    encoded = json.dumps(score.detail, ensure_ascii=False)
    encoded.encode("utf-8")  # would raise on a lone surrogate
    assert "\\u0000" not in encoded
