"""A scorer that raises: the run is kept with reason ``scoring_error``, the other scores stand,
and ``/metrics`` counts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import load_config
from canary.probing.catalog import Probe, load_catalog
from canary.probing.completion import Completion
from canary.probing.runner import run_pass
from canary.scoring import SCORERS, Score, ScoringContext
from canary.service.metrics import ServiceMetrics
from tests.loopback import serve_in_thread
from tests.upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

PROBES = """
[defaults]
scorers = ["unexpected_script"]

[[probe]]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"
repeat = 2
"""


class RaisingScorer:
    """An alternative ``unexpected_script`` implementation with a bug."""

    name = "unexpected_script"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        raise ZeroDivisionError("division by zero in the script table")


async def test_a_raising_scorer_keeps_the_run_and_the_other_scores_and_is_counted(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SCORERS, RaisingScorer.name, RaisingScorer())
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "one.toml").write_text(PROBES)
    with serve_in_thread(ScriptedUpstream().app) as server:
        (tmp_path / "canary.toml").write_text(
            'probes_dir = "probes"\n[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a"\n'
            f'provider = "openai-chat"\nbase_url = "{server.url}/v1"\nmodel_id = "ok"\n'
        )
        config = load_config(tmp_path / "canary.toml")
        summary = await run_pass(engine, config.targets, load_catalog(tmp_path / "probes").probes)
    async with engine.connect() as conn:
        runs = (await conn.execute(sa.text("SELECT status, reason, error, output_text FROM runs"))).all()
        metrics = (await conn.execute(sa.text("SELECT DISTINCT metric FROM scores"))).scalars().all()
    assert len(runs) == 2
    for status, reason, error, output in runs:
        assert (status, reason) == ("ok", "scoring_error") and output  # the answer is kept
        assert "unexpected_script: ZeroDivisionError" in error
    assert sorted(metrics) == ["answered"]  # the universal scorers' results stand (routing: no pool)
    assert summary.cells["m/p/a"].scoring_errors == {"unexpected_script": 2}
    service = ServiceMetrics()
    service.observe_pass("one", summary)
    assert (
        'canary_scoring_errors_total{cell="m/p/a",scorer="unexpected_script"} 2.0'
        in service.render().decode()
    )
