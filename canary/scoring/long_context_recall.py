"""``long_context_recall``: the answer recalls the needle hidden in a long haystack.

Needle probes run at several haystack sizes (``context_tokens``: short, 8k, 32k, …). A pool
with a wrong context-window configuration truncates or degrades long prompts, so its recall
drops at the sizes beyond its real window while short sizes still pass; the per-size probe ids
make that pattern visible per pool. Matching is case-insensitive and ignores whitespace and
punctuation differences around the secret.
"""

from __future__ import annotations

import regex

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring._text import clip
from canary.scoring.base import Score, ScoringContext

_NOT_WORD = regex.compile(r"[\W_]+")


def _squash(text: str) -> str:
    return str(_NOT_WORD.sub(" ", text.casefold())).strip()


def recalled(text: str, secret: str) -> bool:
    """Whether ``secret`` appears in ``text``, as whole words, ignoring case and punctuation."""
    return f" {_squash(secret)} " in f" {_squash(text)} "


class LongContextRecallScorer:
    name = "long_context_recall"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        needle = probe.spec.needle
        if needle is None:
            return []
        size = {"context_tokens": probe.spec.context_tokens, "depth": needle.depth}
        if recalled(completion.text, needle.secret):
            return [Score(self.name, True, 1.0, size)]
        detail = {**size, "expected": clip(needle.secret, 60), "answer": clip(completion.text.strip())}
        return [Score(self.name, False, 0.0, detail)]
