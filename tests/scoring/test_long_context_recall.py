"""long_context_recall: the needle's secret is recalled from the haystack."""

from __future__ import annotations

from canary.probing.catalog import NeedleSpec, Probe, ProbeSpec
from canary.probing.completion import Completion
from canary.scoring.base import Score, ScoringContext
from canary.scoring.long_context_recall import LongContextRecallScorer, recalled

NEEDLE = NeedleSpec(
    statement="The vault passphrase is amber-falcon-42.",
    secret="amber-falcon-42",
    filler=("The river runs past the mill.", "Bread is baked at dawn."),
)
PROBE = Probe.from_spec(
    ProbeSpec(
        id="needle-8k",
        prompt="What is the vault passphrase?",
        reference_answer="amber-falcon-42",
        scorers=("long_context_recall",),
        needle=NEEDLE,
        context_tokens=8000,
    ),
    "t",
)


def _score(text: str) -> Score:
    [score] = LongContextRecallScorer().score(PROBE, Completion(ok=True, text=text), ScoringContext())
    return score


def test_the_secret_in_the_answer_passes() -> None:
    score = _score("The vault passphrase is Amber-Falcon-42.")
    assert score.passed
    assert score.detail["context_tokens"] == 8000


def test_a_wrong_or_partial_secret_fails_with_what_was_expected() -> None:
    score = _score("The passphrase is amber-falcon-24.")
    assert not score.passed
    assert score.detail["expected"] == "amber-falcon-42"
    assert not _score("amber-falcon").passed


def test_the_secret_must_appear_as_whole_words() -> None:
    assert not recalled("amber-falcon-421", "amber-falcon-42")
    assert recalled("it is: amber falcon 42!", "amber-falcon-42")


def test_a_probe_without_a_needle_gets_no_score() -> None:
    spec = ProbeSpec(id="t", prompt="p", reference_answer="r", scorers=("answered",))
    assert (
        LongContextRecallScorer().score(
            Probe.from_spec(spec, "t"), Completion(ok=True, text="x"), ScoringContext()
        )
        == []
    )
