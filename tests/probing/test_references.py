"""Determinism references are re-established from evidence, never frozen by the first answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import build_config
from canary.probing.catalog import Probe, ProbeSpec
from canary.probing.cells import Registry
from canary.probing.completion import Completion
from canary.scoring.determinism import reestablished
from canary.storage.writes import RunResult, load_references, sync_probes, sync_targets, write_results

pytestmark = pytest.mark.anyio


def test_the_first_answer_establishes_and_a_consistent_new_answer_replaces_it() -> None:
    assert reestablished(None, ["a"], []) == "a"
    assert reestablished("bad", ["good", "good"], []) is None  # not yet enough evidence
    assert reestablished("bad", ["good", "good", "good"], []) == "good"
    assert reestablished("bad", ["good", "other", "good"], []) is None
    assert reestablished("good", ["good"] * 3, []) is None


def test_peers_that_agree_on_another_text_keep_the_reference_where_it_is() -> None:
    assert reestablished("good", ["bad"] * 3, ["good", "good", "x"]) is None  # stuck in an incident
    assert reestablished("bad", ["good"] * 3, ["good", "good", "x"]) == "good"  # back to the peers
    assert reestablished("bad", ["good"] * 3, ["x", "y"]) == "good"  # no peer majority: own history


def _targets() -> list:  # type: ignore[type-arg]
    tables = [
        {
            "model": "m",
            "platform": "p",
            "pool": pool,
            "provider": "openai-chat",
            "base_url": "http://h/v1",
            "model_id": "m",
        }
        for pool in ("a", "b", "c")
    ]
    return list(build_config({"targets": tables}, "t").targets)


def test_the_registry_renews_a_cells_reference_from_its_recent_answers_unless_peers_disagree() -> None:
    registry = Registry()
    for i, target in enumerate(_targets(), start=1):
        registry.targets[target.cell] = (target, i)
    assert registry.renew_reference(1, 10, "incident answer")  # the first answer: established
    assert not registry.renew_reference(1, 10, "healthy") and not registry.renew_reference(1, 10, "healthy")
    assert registry.renew_reference(1, 10, "healthy") and registry.references[(1, 10)] == "healthy"
    registry.references[(2, 10)] = registry.references[(3, 10)] = "healthy"
    for _ in range(3):  # now the cell drifts to a consistent wrong answer while its peers agree
        assert not registry.renew_reference(1, 10, "drifted")
    assert registry.references[(1, 10)] == "healthy"


async def test_a_re_established_reference_replaces_the_stored_row(engine: AsyncEngine) -> None:
    [target] = _targets()[:1]
    probe = Probe.from_spec(
        ProbeSpec(id="d", prompt="p", reference_answer="r", scorers=("determinism",)), "s"
    )
    async with engine.begin() as conn:
        target_id = (await sync_targets(conn, [target]))[target.cell]
        probe_pk = (await sync_probes(conn, [probe]))[(probe.id, probe.version)]

        def run(text: str) -> RunResult:
            return RunResult(
                uuid.uuid4(),
                target_id,
                probe_pk,
                datetime.now(UTC),
                Completion(True, text),
                establishes_reference=True,
            )

        await write_results(conn, [run("first")])
        await write_results(conn, [run("second"), run("third")])  # two in one batch: the newest wins
        assert await load_references(conn, [target_id]) == {(target_id, probe_pk): "third"}
