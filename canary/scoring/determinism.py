"""``determinism``: a temperature-0 answer agrees with the cell's stored reference answer.

The first successful temperature-0 answer a cell gives for a probe version becomes its
reference (the runner stores it and passes it back as ``ScoringContext.reference_text``); with
no reference yet the run passes and says it established one. The reference is not frozen: when
the cell's recent answers agree with each other and not with it, it is re-established from that
evidence, unless the same model's other cells agree on another text (:func:`reestablished`), so
a reference taken during an incident does not fail the probe forever. Later runs report whether
the text equals the reference, the fraction of the reference they agree with, and where they first
diverge (character offset and, when tokens were returned, token index).

Without batch-invariant kernels some temperature-0 nondeterminism is normal, so this scorer
only measures: detection judges a cell's disagreement rate against that pool's own baseline,
never against strict equality. The per-pass agreement rate over a probe's ``repeat`` runs is
the mean of these Bernoulli outcomes (see :func:`pass_agreement`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from canary.probing.catalog import Probe
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring._text import snippet
from canary.scoring.base import Score, ScoringContext


def first_divergence(text: str, reference: str) -> int:
    """Offset of the first character where the two strings differ (``len`` of the shorter if a prefix).

    A binary search over prefix comparisons, which run at C speed, instead of a per-character loop.
    """
    lo, hi = 0, min(len(text), len(reference))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text[:mid] == reference[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(text: str, reference: str, limit: int) -> int:
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text[len(text) - mid :] == reference[len(reference) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def agreement(text: str, reference: str) -> float:
    """Share of the longer text covered by the common prefix and common suffix, in [0, 1].

    1.0 when equal. A temperature-0 divergence usually starts at one token and either runs to
    the end (prefix share) or rejoins the reference (prefix + suffix); this measures both in
    O(log n) comparisons, where an edit-distance ratio would cost milliseconds per answer.
    """
    if text == reference:
        return 1.0
    longest = max(len(text), len(reference))
    prefix = first_divergence(text, reference)
    suffix = _common_suffix(text, reference, min(len(text), len(reference)) - prefix)
    return (prefix + suffix) / longest


def token_at(tokens: Sequence[TokenLogprob], offset: int) -> int | None:
    """Index of the token covering character ``offset`` of the concatenated token texts."""
    position = 0
    for index, token in enumerate(tokens):
        position += len(token.token)
        if position > offset:
            return index
    return len(tokens) if tokens else None


RECENT_QUORUM = 3
"""Identical recent answers that outweigh a stored reference."""


def reestablished(
    stored: str | None, recent: Sequence[str], peers: Sequence[str], quorum: int = RECENT_QUORUM
) -> str | None:
    """The text the cell should hold as its reference from now on, or None to keep ``stored``.

    1. Nothing stored: the newest answer establishes the reference.
    2. The last ``quorum`` answers are identical and differ from ``stored``: the cell's recent
       history has moved away from its reference.
    3. Where the peers' references (the same model and probe version on other cells) have a
       majority text, the reference moves only to that text: a cell stuck in an incident on a
       consistent wrong answer never makes it its reference while its peers say otherwise;
       without a peer majority the cell's own recent history decides.
    """
    if stored is None:
        return recent[-1] if recent else None
    if len(recent) < quorum or len(set(recent[-quorum:])) != 1 or recent[-1] == stored:
        return None
    candidate = recent[-1]
    if peers:
        text, count = Counter(peers).most_common(1)[0]
        if count > len(peers) / 2 and text != candidate:
            return None
    return candidate


def pass_agreement(texts: Sequence[str], reference: str | None = None) -> float:
    """Share of a pass's repeated answers equal to ``reference`` (or to the first answer)."""
    if not texts:
        return 1.0
    target = texts[0] if reference is None else reference
    return sum(t == target for t in texts) / len(texts)


class DeterminismScorer:
    name = "determinism"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        reference = context.reference_text
        text = completion.text
        if reference is None:
            return [Score(self.name, True, 1.0, {"established_reference": True})]
        if text == reference:
            return [Score(self.name, True, 1.0, {})]
        offset = first_divergence(text, reference)
        detail: dict[str, Any] = {
            "first_divergent_char": offset,
            "first_divergent_token": token_at(completion.tokens, offset) if completion.tokens else None,
            "reference": snippet(reference, offset),
            "output": snippet(text, offset),
            "reference_chars": len(reference),
            "output_chars": len(text),
        }
        return [Score(self.name, False, agreement(text, reference), detail)]
