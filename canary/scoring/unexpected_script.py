"""``unexpected_script``: characters from a Unicode script the probe's answer may not use.

The postmortem's output corruption put Thai or Chinese characters inside English answers
("สวัสดี" mid-sentence). Every probe declares ``allowed_scripts``; characters of Common and
Inherited script (digits, punctuation including CJK punctuation, math symbols, emoji, combining
marks) are always allowed, so only letters of a foreign writing system are flagged.
"""

from __future__ import annotations

from typing import Any

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring._scripts import disallowed_pattern, script_of
from canary.scoring._text import MAX_SPANS, clip, snippet
from canary.scoring.base import Score, ScoringContext


def find_unexpected(text: str, allowed: tuple[str, ...]) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
    """Count disallowed characters: (total, per-script counts, first spans by script).

    A run of disallowed characters is split where the script changes, so a run mixing Thai and
    Han is reported as two spans, each with its own script name.
    """
    total = 0
    per_script: dict[str, int] = {}
    spans: list[dict[str, Any]] = []
    for match in disallowed_pattern(allowed).finditer(text):
        run_start = match.start()
        run = match.group()
        total += len(run)
        i = 0
        while i < len(run):
            script = script_of(run[i])
            j = i + 1
            while j < len(run) and script_of(run[j]) == script:
                j += 1
            per_script[script] = per_script.get(script, 0) + (j - i)
            if len(spans) < MAX_SPANS:
                start, end = run_start + i, run_start + j
                spans.append(
                    {
                        "start": start,
                        "end": end,
                        "script": script,
                        "text": clip(text[start:end], 40),
                        "context": snippet(text, start, end),
                    }
                )
            i = j
    return total, per_script, spans


class UnexpectedScriptScorer:
    name = "unexpected_script"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        allowed = probe.spec.allowed_scripts
        total, per_script, spans = find_unexpected(completion.text, allowed)
        if total == 0:
            return [Score(self.name, True, 0.0, {})]
        detail = {"count": total, "scripts": per_script, "spans": spans, "allowed": list(allowed)}
        return [Score(self.name, False, float(total), detail)]
