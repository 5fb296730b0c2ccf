"""``known_answer``: the answer matches the probe's expected answer.

Graders (``[probe.answer] kind``):

- ``exact``: the answer, stripped of surrounding whitespace, equals ``value``;
- ``casefold``: equal after case folding, whitespace collapsing and trimming the punctuation and
  quotes a model puts around a one-word answer ("Paris." passes for "paris");
- ``regex``: ``pattern`` is found in the answer;
- ``numeric``: the answer's number (the whole answer when it is a number, else the last number
  in it) is within ``tolerance`` of ``value``;
- ``choice``: the option the answer picks among ``choices`` is ``value``.
"""

from __future__ import annotations

import math
from typing import Any

import regex

from canary.probing.catalog import AnswerSpec, Probe
from canary.probing.completion import Completion
from canary.scoring._text import clip
from canary.scoring.base import Score, ScoringContext

_SPACE = regex.compile(r"\s+")
_EDGE = "\"'`“”‘’«»「」『』()[]*_.,;:!?。、！？ \t\r\n"
_NUMBER = regex.compile(r"(?<![\w.])[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_REGEX_TIMEOUT_S = 0.05  # catalog patterns are ours, but a pathological answer must not stall a pass


def normalise(text: str) -> str:
    return str(_SPACE.sub(" ", text.casefold())).strip(_EDGE)


def parse_number(text: str) -> float | None:
    """The number an answer gives: the whole answer if it is one, else its last number."""
    stripped = text.strip().strip(_EDGE)
    candidates = _NUMBER.findall(stripped)
    if not candidates:
        return None
    whole = _NUMBER.fullmatch(stripped)
    raw = whole.group() if whole else candidates[-1]
    try:
        value = float(raw.replace(",", "").replace("−", "-"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def pick_choice(text: str, choices: tuple[str, ...]) -> str | None:
    """The option an answer picks: leading "B", "(B)", "B." or "answer is B", else a lone mention.

    Single-letter options are matched case-sensitively, so the English article "a" is not
    mistaken for option "A"; longer options ("yes", "Paris") are matched case-insensitively.
    """

    def token(choice: str) -> str:
        body = regex.escape(choice)
        return body if len(choice) == 1 else f"(?i:{body})"

    alternatives = "|".join(token(c) for c in sorted(choices, key=len, reverse=True))
    stripped = text.strip()
    lead = regex.match(rf"[\s(\[*]*({alternatives})(?![\w])", stripped)
    if lead:
        return _canonical(lead.group(1), choices)
    stated = regex.search(rf"(?i:answer)\W+(?:(?i:is)\W+)?[(\[*]*({alternatives})(?![\w])", stripped)
    if stated:
        return _canonical(stated.group(1), choices)
    found = {_canonical(m, choices) for m in regex.findall(rf"(?<![\w])({alternatives})(?![\w])", stripped)}
    return found.pop() if len(found) == 1 else None


def _canonical(found: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if found == choice or (len(choice) > 1 and found.casefold() == choice.casefold()):
            return choice
    return found


def grade(answer: AnswerSpec, text: str) -> tuple[bool, dict[str, Any]]:
    """(passed, detail) for one answer; never raises on arbitrary text."""
    kind = answer.kind
    if kind == "exact":
        return text.strip() == str(answer.value), {}
    if kind == "casefold":
        return normalise(text) == normalise(str(answer.value)), {}
    if kind == "regex":
        try:
            found = regex.search(answer.pattern or "", text, timeout=_REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            return False, {"error": "pattern timed out"}
        return found, {}
    if kind == "numeric":
        got = parse_number(text)
        if got is None:
            return False, {"got": None}
        expected = float(answer.value)  # type: ignore[arg-type]  # validated by AnswerSpec
        return abs(got - expected) <= answer.tolerance, {"got": got}
    picked = pick_choice(text, answer.choices)
    return picked == str(answer.value), {"got": picked}


class KnownAnswerScorer:
    name = "known_answer"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        answer = probe.spec.answer
        if answer is None:
            return []
        passed, extra = grade(answer, completion.text)
        if passed:
            return [Score(self.name, True, 1.0, {})]
        expected = answer.pattern if answer.kind == "regex" else answer.value
        detail = {"kind": answer.kind, "expected": expected, "answer": clip(completion.text.strip()), **extra}
        return [Score(self.name, False, 0.0, detail)]
