"""The routing invariant: a cell's runs must be served by the pool it expects."""

from __future__ import annotations

from canary.probing.catalog import load_catalog
from canary.probing.completion import Completion
from canary.scoring import ScoringContext, score_completion

PROBE = load_catalog().by_id("en-capital-france")
OK = Completion(ok=True, text="Paris", served_by={"x-served-pool": "long-context"})


def routing(context: ScoringContext) -> list[tuple[bool, dict[str, object]]]:
    return [(s.passed, s.detail) for s in score_completion(PROBE, OK, context) if s.metric == "routing"]


def test_a_run_served_by_another_pool_fails_routing_with_both_pools_named() -> None:
    [(passed, detail)] = routing(ScoringContext(expected_pool="short-context", served_pool="long-context"))
    assert not passed
    assert detail["expected_pool"] == "short-context" and detail["served_pool"] == "long-context"


def test_a_run_served_by_the_expected_pool_passes_routing() -> None:
    assert routing(ScoringContext(expected_pool="long-context", served_pool="long-context")) == [(True, {})]


def test_routing_is_not_scored_without_an_expectation_or_without_evidence() -> None:
    assert routing(ScoringContext(served_pool="long-context")) == []
    assert routing(ScoringContext(expected_pool="short-context")) == []


def test_failed_runs_get_no_routing_score() -> None:
    failed = Completion(ok=False, served_by={"x-served-pool": "long-context"})
    context = ScoringContext(expected_pool="short-context", served_pool="long-context")
    assert score_completion(PROBE, failed, context) == []
