"""``canary compare``'s pure judgement: aligned tokens, a tokenizer mismatch, cell verdicts and exit codes."""

from __future__ import annotations

import numpy as np

from canary.stats.audit import cell_verdict, compare_forced, compare_greedy, compare_sampled, exit_code
from canary.stats.equivalence import Comparison


def _c(verdict: str) -> Comparison:
    return Comparison("s", 0.0, 0.0, 0.0, 1.0, 0.0, 1, verdict)  # type: ignore[arg-type]


def test_forced_pairs_only_the_keys_every_cell_scored() -> None:
    rng = np.random.default_rng(1)
    base = {("p", r): list(rng.normal(-0.5, 0.3, 40)) for r in range(5)}
    peers = [{k: [v + rng.normal(0, 1e-4) for v in vs] for k, vs in base.items()} for _ in range(4)]
    del peers[0][("p", 4)]  # one peer missed a round: that round is left out for everyone
    cell = {k: [v + 0.05 * rng.standard_normal() for v in vs] for k, vs in base.items()}
    result = compare_forced(cell, peers, alpha=0.001)
    assert result.n == 4 * 40 and result.verdict == "different"


def test_a_different_token_count_is_a_different_tokenizer() -> None:
    peers = [{("p", 0): [-0.1] * 10}, {("p", 0): [-0.1] * 10}]
    result = compare_forced({("p", 0): [-0.1] * 12}, peers, alpha=0.001)
    assert result.statistic == "forced_token_count" and result.verdict == "different"


def test_no_shared_evidence_is_inconclusive() -> None:
    assert compare_forced({}, [{}], 0.001).verdict == "inconclusive"
    assert compare_greedy({"p": ["a"]}, [{"q": ["a"]}], 0.001).verdict == "inconclusive"
    assert (
        compare_sampled({"p": ["a"]}, [{"p": ["a"]}], 0.001, np.random.default_rng(0)).verdict
        == "inconclusive"
    )


def test_cell_verdicts_and_exit_codes() -> None:
    assert cell_verdict([_c("equivalent"), _c("inconclusive")]) == "equivalent"
    assert cell_verdict([_c("equivalent"), _c("different")]) == "different"
    assert cell_verdict([_c("inconclusive")]) == "inconclusive"
    assert exit_code(["equivalent", "equivalent"]) == 0
    assert exit_code(["equivalent", "different"]) == 1
    assert exit_code(["equivalent", "inconclusive"]) == 2 and exit_code([]) == 2


def test_greedy_says_where_the_cells_answers_leave_the_consensus() -> None:
    peers = [{f"p{i}": [f"the answer {i} is here"] * 2 for i in range(4)} for _ in range(3)]
    cell = {f"p{i}": [f"the answer {i} was here"] * 2 for i in range(4)}
    result = compare_greedy(cell, peers, 0.01)
    assert result.statistic == "greedy_divergence (median first divergent token 3)"
