"""The scorer registry, the catalog's reference answers, and the no-I/O rule for scorers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import canary.scoring
from canary.probing.catalog import KNOWN_SCORERS, Probe, load_catalog
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring import SCORERS, ScoringContext, score_completion

CATALOG = load_catalog()
METRICS = {
    "answered",
    "routing",
    "unexpected_script",
    "code_syntax",
    "known_answer",
    "determinism",
    "argmax_conformance",
    "long_context_recall",
}


def conforming_tokens(text: str) -> list[TokenLogprob]:
    """A synthetic greedy decode of ``text``: every chosen token is the most probable one."""
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    return [TokenLogprob(p, -0.05, ((p, -0.05), ("<alt>", -3.5), ("<alt2>", -6.0))) for p in pieces]


def test_the_registry_holds_exactly_the_metric_names_the_catalog_accepts() -> None:
    assert set(SCORERS) == METRICS == set(KNOWN_SCORERS)
    assert all(name == scorer.name for name, scorer in SCORERS.items())


@pytest.mark.parametrize("probe", CATALOG.probes, ids=lambda p: p.id)
def test_every_reference_answer_passes_every_scorer_its_probe_lists(probe: Probe) -> None:
    answer = probe.spec.reference_answer
    completion = Completion(ok=True, text=answer, tokens=conforming_tokens(answer))
    scores = score_completion(probe, completion, ScoringContext(reference_text=answer))
    assert {s.metric for s in scores} == {"answered", *probe.spec.scorers}
    assert [s for s in scores if not s.passed] == []


def test_a_corrupted_reference_answer_fails_unexpected_script() -> None:
    probe = CATALOG.by_id("en-sky-blue")
    text = probe.spec.reference_answer.replace("molecules", "molecules สวัสดี")
    [score] = [
        s for s in score_completion(probe, Completion(ok=True, text=text)) if s.metric == "unexpected_script"
    ]
    assert not score.passed


def test_failed_completions_get_no_scores() -> None:
    assert score_completion(CATALOG.probes[0], Completion(ok=False)) == []


def test_scoring_modules_import_no_io_library() -> None:
    forbidden = {"sqlalchemy", "httpx", "anyio", "asyncio", "socket", "subprocess", "os", "pathlib", "io"}
    package = Path(canary.scoring.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, module.name
            assert not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open")
