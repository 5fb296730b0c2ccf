"""Scorers by name. A probe's ``scorers`` list picks from :data:`SCORERS`.

Adding a scorer is one module here plus its entry below (and its name in
``canary.probing.assertions.KNOWN_SCORERS``, which validates probe files); scorers never touch I/O.
A probe's declared checks (``[[probe.assert]]``, :mod:`canary.scoring.assertions`) run after its
scorers, each on its own under the metric it names.
"""

from __future__ import annotations

import logging

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring.answered import AnsweredScorer
from canary.scoring.argmax_conformance import ArgmaxConformanceScorer
from canary.scoring.assertions import AssertionScorer
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
log = logging.getLogger(__name__)


def scorer_names(probe: Probe) -> list[str]:
    """The scorers of one probe, in order: the cell-level invariants, then the probe's own.

    Probe files are validated against the registered names at load, so an unknown name cannot
    reach here; it is skipped rather than failing a pass.
    """
    return [n for n in dict.fromkeys([*UNIVERSAL, *probe.spec.scorers]) if n in SCORERS]


def scorers_of(probe: Probe) -> list[Scorer]:
    """Everything that scores one probe, in order: :func:`scorer_names`, then its declared checks."""
    return [*(SCORERS[n] for n in scorer_names(probe)), *map(AssertionScorer, probe.spec.assertions)]


def score_completion(
    probe: Probe, completion: Completion, context: ScoringContext | None = None
) -> list[Score]:
    """Every applicable score for one successful completion (failed runs get none)."""
    if not completion.ok:
        return []
    context = context or ScoringContext()
    return [s for scorer in scorers_of(probe) for s in scorer.score(probe, completion, context)]


def score_each(
    probe: Probe, completion: Completion, context: ScoringContext
) -> tuple[list[Score], dict[str, str]]:
    """:func:`score_completion` with each scorer run on its own, and the scorers that raised.

    A scorer that raises is reported (``name -> "Type: message"``) instead of taking the others'
    scores with it: the runner stores the run with reason ``scoring_error`` and the rest stand.
    """
    if not completion.ok:
        return [], {}
    scores: list[Score] = []
    failed: dict[str, str] = {}
    for scorer in scorers_of(probe):
        try:
            scores.extend(scorer.score(probe, completion, context))
        except Exception as exc:  # a scorer bug; the run and the other scores are kept
            log.debug("scorer %s raised", scorer.name, exc_info=True)
            failed[scorer.name] = f"{type(exc).__name__}: {exc}"
    return scores, failed


__all__ = [
    "SCORERS",
    "Score",
    "Scorer",
    "ScoringContext",
    "score_completion",
    "score_each",
    "scorer_names",
    "scorers_of",
]
