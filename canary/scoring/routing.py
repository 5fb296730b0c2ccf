"""``routing``: the pool that served the run is the pool the cell expects.

Misrouting degrades answers only sometimes, so quality metrics see it late and at a fraction
of its rate; the served-by header sees every misrouted request the first time it happens.
Applies to every probe on a cell that sets ``expected_pool`` and whose responses name their
pool; with no served-by evidence there is nothing to judge and no score.
"""

from __future__ import annotations

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring.base import Score, ScoringContext


class RoutingScorer:
    name = "routing"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        if context.expected_pool is None or context.served_pool is None:
            return []
        passed = context.served_pool == context.expected_pool
        detail = (
            {}
            if passed
            else {
                "expected_pool": context.expected_pool,
                "served_pool": context.served_pool,
                "served_by": dict(list(completion.served_by.items())[:4]),
            }
        )
        return [Score("routing", passed, None, detail)]
