"""Scorers by name. A probe's ``scorers`` list picks from :data:`SCORERS`.

Adding a scorer is one module here plus its entry below (and its name in
``canary.probing.catalog.KNOWN_SCORERS``, which validates probe files); scorers never touch I/O.
"""

from __future__ import annotations

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring.answered import AnsweredScorer
from canary.scoring.argmax_conformance import ArgmaxConformanceScorer
from canary.scoring.base import Score, Scorer, ScoringContext
from canary.scoring.code_syntax import CodeSyntaxScorer
from canary.scoring.determinism import DeterminismScorer
from canary.scoring.known_answer import KnownAnswerScorer
from canary.scoring.long_context_recall import LongContextRecallScorer
from canary.scoring.routing import RoutingScorer
from canary.scoring.unexpected_script import UnexpectedScriptScorer

SCORERS: dict[str, Scorer] = {
    scorer.name: scorer
    for scorer in (
        AnsweredScorer(),
        UnexpectedScriptScorer(),
        CodeSyntaxScorer(),
        KnownAnswerScorer(),
        DeterminismScorer(),
        ArgmaxConformanceScorer(),
        LongContextRecallScorer(),
        RoutingScorer(),
    )
}

UNIVERSAL = ("answered", "routing")


def score_completion(
    probe: Probe, completion: Completion, context: ScoringContext | None = None
) -> list[Score]:
    """Every applicable score for one successful completion (failed runs get none).

    ``answered`` and ``routing`` (cell-level invariants) apply to every probe; the probe's own
    scorers follow. Probe files are
    validated against the registered names at load, so an unknown name cannot reach here; it
    would be skipped rather than fail a pass.
    """
    if not completion.ok:
        return []
    context = context or ScoringContext()
    scores = [s for name in UNIVERSAL for s in SCORERS[name].score(probe, completion, context)]
    for name in probe.spec.scorers:
        scorer = SCORERS.get(name)
        if scorer is not None and name not in UNIVERSAL:
            scores.extend(scorer.score(probe, completion, context))
    return scores


__all__ = ["SCORERS", "Score", "Scorer", "ScoringContext", "score_completion"]
