"""argmax_conformance: dropped top tokens at temperature 0, tokens outside the top-p nucleus."""

from __future__ import annotations

import json
import math

from canary.probing.catalog import Probe, ProbeSpec
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring.argmax_conformance import ArgmaxConformanceScorer
from canary.scoring.base import Score, ScoringContext


def _probe(temperature: float = 0.0, top_p: float | None = None) -> Probe:
    spec = ProbeSpec(
        id="t",
        prompt="p",
        reference_answer="r",
        scorers=("argmax_conformance",),
        temperature=temperature,
        top_p=top_p,
        logprobs=True,
        top_logprobs=5,
    )
    return Probe.from_spec(spec, "t")


def _scores(probe: Probe, tokens: list[TokenLogprob] | None) -> list[Score]:
    text = "".join(t.token for t in tokens or [])
    return ArgmaxConformanceScorer().score(
        probe, Completion(ok=True, text=text, tokens=tokens), ScoringContext()
    )


def _step(chosen: str, chosen_lp: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(chosen, chosen_lp, tuple(sorted(alternatives, key=lambda a: -a[1])))


GREEDY = [
    _step("The", -0.05, ("The", -0.05), ("A", -3.2)),
    _step(" cat", -0.2, (" cat", -0.2), (" dog", -1.9)),
    _step(" sat", -0.01, (" sat", -0.01), (" ran", -5.0)),
]


def test_greedy_tokens_that_are_always_the_argmax_pass() -> None:
    [score] = _scores(_probe(), GREEDY)
    assert score.passed
    assert score.value == 0.0
    assert score.detail == {"steps_checked": 3}


def test_a_dropped_top_token_at_temperature_zero_is_a_violation() -> None:
    tokens = [*GREEDY[:1], _step(" dog", -1.9, (" cat", -0.2), (" dog", -1.9)), GREEDY[2]]
    [score] = _scores(_probe(), tokens)
    assert not score.passed
    assert score.value == 1 / 3
    [step] = score.detail["steps"]
    assert step["step"] == 1
    assert step["offset"] == 3
    assert step["chosen"] == " dog"
    assert step["top"] == " cat"
    assert step["reason"] == "not argmax"
    json.dumps(score.detail, allow_nan=False)


def test_a_near_tie_within_float_tolerance_is_not_a_violation() -> None:
    tokens = [_step(" dog", -0.6935, (" cat", -0.6930), (" dog", -0.6935))]
    [score] = _scores(_probe(), tokens)
    assert score.passed


def test_tokens_spelled_differently_in_top_are_judged_by_logprob() -> None:
    tokens = [_step("Ġcat", -0.2, (" cat", -0.2), (" dog", -1.9))]
    assert _scores(_probe(), tokens)[0].passed


def test_without_logprobs_there_is_no_score() -> None:
    assert _scores(_probe(), None) == []
    assert _scores(_probe(), [TokenLogprob("The", -0.1)]) == []


def test_a_chosen_token_outside_the_top_p_nucleus_is_a_violation() -> None:
    # Top alternatives hold 0.95 + 0.045 = 0.995 of the mass; with top_p = 0.99 the third is outside.
    step = _step(
        " x", math.log(0.004), (" a", math.log(0.95)), (" b", math.log(0.045)), (" x", math.log(0.004))
    )
    [score] = _scores(_probe(temperature=1.0, top_p=0.99), [step])
    assert not score.passed
    assert score.detail["mode"] == "top_p"
    assert score.detail["steps"][0]["mass_before"] == 0.995


def test_a_sampled_token_inside_the_nucleus_passes() -> None:
    step = _step(
        " b", math.log(0.045), (" a", math.log(0.95)), (" b", math.log(0.045)), (" x", math.log(0.004))
    )
    assert _scores(_probe(temperature=1.0, top_p=0.99), [step])[0].passed


def test_a_chosen_token_missing_from_a_truncated_list_is_not_flagged_when_the_list_is_below_top_p() -> None:
    step = _step(" z", math.log(0.01), (" a", math.log(0.5)), (" b", math.log(0.3)))
    assert _scores(_probe(temperature=0.8, top_p=0.99), [step])[0].passed


def test_sampling_without_top_p_gets_no_score() -> None:
    assert _scores(_probe(temperature=1.0), GREEDY) == []


def test_a_chosen_token_with_nan_or_zero_probability_is_a_violation_and_detail_stays_valid_json() -> None:
    tokens = [_step("x", float("nan"), ("a", -0.1)), _step("y", float("-inf"), ("a", -0.1))]
    [score] = _scores(_probe(), tokens)
    assert score.detail["violations"] == 2
    json.dumps(score.detail, allow_nan=False)
