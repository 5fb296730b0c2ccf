"""Scorers by name. A probe's ``scorers`` list picks from :data:`SCORERS`.

Adding a scorer is one module here plus its entry below; scorers never touch I/O.
"""

from __future__ import annotations

from canary.catalog import Probe
from canary.completion import Completion
from canary.scoring.base import Score, Scorer, ScoringContext
from canary.scoring.answered import AnsweredScorer

SCORERS: dict[str, Scorer] = {
    scorer.name: scorer
    for scorer in (
        AnsweredScorer(),
    )
}


def score_completion(probe: Probe, completion: Completion, context: ScoringContext | None = None) -> list[Score]:
    """Every applicable score for one successful completion (failed runs get none).

    ``answered`` applies to every probe; the probe's own scorers follow. A scorer a probe names
    but that is unknown is a catalog error caught at load, so it is skipped here.
    """
    if not completion.ok:
        return []
    context = context or ScoringContext()
    scores = SCORERS["answered"].score(probe, completion, context)
    for name in probe.spec.scorers:
        scorer = SCORERS.get(name)
        if scorer is not None and name != "answered":
            scores.extend(scorer.score(probe, completion, context))
    return scores


__all__ = ["SCORERS", "Score", "Scorer", "ScoringContext", "score_completion"]
