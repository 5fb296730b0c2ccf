"""determinism: agreement with the cell's stored temperature-0 reference, and where it diverges."""

from __future__ import annotations

import pytest

from canary.probing.catalog import Probe, ProbeSpec
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring.base import Score, ScoringContext
from canary.scoring.determinism import DeterminismScorer, agreement, pass_agreement

PROBE = Probe.from_spec(
    ProbeSpec(id="t", prompt="p", reference_answer="r", scorers=("determinism",), repeat=5), "t"
)


def _score(text: str, reference: str | None, tokens: list[TokenLogprob] | None = None) -> Score:
    completion = Completion(ok=True, text=text, tokens=tokens)
    [score] = DeterminismScorer().score(PROBE, completion, ScoringContext(reference_text=reference))
    return score


def test_the_first_answer_establishes_the_reference_and_passes() -> None:
    score = _score("The sky is blue.", None)
    assert score.passed
    assert score.detail == {"established_reference": True}


def test_an_answer_equal_to_the_reference_passes_with_full_agreement() -> None:
    score = _score("The sky is blue.", "The sky is blue.")
    assert score.passed
    assert score.value == 1.0


def test_a_divergent_answer_fails_and_reports_the_first_divergent_character() -> None:
    reference = "The sky is blue because of Rayleigh scattering."
    text = "The sky is blue because of Mie scattering."
    score = _score(text, reference)
    assert not score.passed
    assert score.detail["first_divergent_char"] == 27
    assert "Rayleigh" in score.detail["reference"]
    assert "Mie" in score.detail["output"]
    assert score.value is not None and 0.5 < score.value < 1.0


def test_first_divergent_token_is_found_from_the_returned_tokens() -> None:
    tokens = [TokenLogprob(t, -0.1) for t in ["The", " sky", " is", " green", "."]]
    score = _score("The sky is green.", "The sky is blue.", tokens)
    assert score.detail["first_divergent_char"] == 11
    assert score.detail["first_divergent_token"] == 3


def test_an_answer_that_stops_early_diverges_at_its_end() -> None:
    score = _score("The sky", "The sky is blue.")
    assert not score.passed
    assert score.detail["first_divergent_char"] == 7
    assert score.detail["output_chars"] == 7


def test_a_completely_different_answer_has_low_agreement() -> None:
    assert agreement("zzzzzzzz", "The sky is blue.") < 0.2
    assert agreement("", "x") == 0.0


def test_agreement_counts_the_common_prefix_and_suffix_of_the_longer_text() -> None:
    assert agreement("a" * 1500 + "b" * 1500, "a" * 3000) == pytest.approx(0.5)
    assert agreement("The cat sat.", "The dog sat.") == pytest.approx(9 / 12)
    assert agreement("abc XYZ def", "abc def") == pytest.approx(7 / 11)
    assert agreement("aaaa", "aa") == pytest.approx(0.5)  # prefix and suffix never overlap


def test_pass_agreement_is_the_share_of_repeats_equal_to_the_reference() -> None:
    assert pass_agreement(["x", "x", "y", "x"], "x") == 0.75
    assert pass_agreement(["x", "y", "y"]) == pytest.approx(1 / 3)
    assert pass_agreement([]) == 1.0
