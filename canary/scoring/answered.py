"""``answered``: the completion has non-blank text. The floor under every other metric."""

from __future__ import annotations

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring._text import clean
from canary.scoring.base import Score, ScoringContext


class AnsweredScorer:
    name = "answered"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        has_text = bool(completion.text.strip())
        reason = completion.finish_reason
        detail = {} if has_text else {"finish_reason": None if reason is None else clean(reason)}
        return [Score("answered", has_text, float(len(completion.text)), detail)]
