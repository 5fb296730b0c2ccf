"""Each fault, switched on, changes the scores it should, and only on the cells it should.

Cells are probed through canary's own OpenAI chat provider and scored with canary's scorers,
as the runner would; the determinism reference is the cell model's healthy answer.
"""

from __future__ import annotations

import pytest
from fleetkit import PassResult, ProbeCells, select

from canary.fleet.running import RunningFleet
from canary.probing.catalog import Catalog, Probe

POOL_CELLS = [
    f"{model}/{platform}/{pool}"
    for model in ("canary-small", "canary-large")
    for platform in ("first-party", "cloud-a", "cloud-b")
    for pool in ("short-context", "long-context")
]
FRONT_DOORS = ["canary-small/first-party/front-door", "canary-large/cloud-b/front-door"]


def references(catalog: Catalog) -> dict[str, str]:
    """A healthy temperature-0 chat answer is the probe's reference answer, for both models."""
    return {
        f"{m}/{p.id}": p.spec.reference_answer
        for m in ("canary-small", "canary-large")
        for p in catalog.probes
    }


def assert_clean(result: PassResult, cells: list[str], metrics: set[str] | None = None) -> None:
    for cell in cells:
        for metric in metrics or result.metrics(cell):
            assert result.failure_rate(cell, metric) == 0.0, f"{cell} {metric} changed"


@pytest.fixture(scope="module")
def everyday(catalog: Catalog) -> list[Probe]:
    """A mix with every scorer: prose in four scripts, code, known answers, determinism, needles."""
    return select(
        catalog,
        sets=(
            "prose-en",
            "prose-zh",
            "prose-ko",
            "code-python",
            "code-javascript",
            "facts",
            "arithmetic",
            "determinism",
            "longctx",
            "sampling",
        ),
    )


def test_a_healthy_fleet_passes_every_scorer_on_every_cell(probe_cells: ProbeCells, catalog: Catalog) -> None:
    probes = select(catalog)
    result = probe_cells(POOL_CELLS + FRONT_DOORS, probes, references=references(catalog))
    for cell in POOL_CELLS + FRONT_DOORS:
        for metric in result.metrics(cell):
            # Sampled probes (temperature 0.7) may swap a filler word; nothing else may fail.
            assert result.failure_rate(cell, metric) <= 0.02, (
                cell,
                metric,
                result.failure_rate(cell, metric),
            )
    assert {
        "unexpected_script",
        "code_syntax",
        "known_answer",
        "determinism",
        "argmax_conformance",
        "long_context_recall",
        "routing",
    } <= result.metrics(POOL_CELLS[0]) | result.metrics(FRONT_DOORS[0])


def test_corrupt_puts_rare_scripts_in_prose_and_breaks_code_only_on_its_pool(
    fleet: RunningFleet, probe_cells: ProbeCells, catalog: Catalog, everyday: list[Probe]
) -> None:
    fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=1.0)
    hit = ["canary-small/cloud-a/short-context", "canary-large/cloud-a/short-context"]
    spared = ["canary-small/cloud-a/long-context", "canary-large/first-party/short-context"]
    result = probe_cells(hit + spared, everyday, references=references(catalog))
    for cell in hit:
        assert result.failure_rate(cell, "unexpected_script") >= 0.6
        assert result.failure_rate(cell, "code_syntax") >= 0.6
        assert result.failure_rate(cell, "argmax_conformance") == 0.0  # the corrupt token *is* the argmax
    assert_clean(result, spared)


def test_topk_drop_breaks_argmax_conformance_only_for_its_model_on_its_pool(
    fleet: RunningFleet, probe_cells: ProbeCells, catalog: Catalog
) -> None:
    fleet.set_fault(
        fault="topk_drop", platform="cloud-b", pool="short-context", models=["canary-small"], intensity=0.2
    )
    probes = select(catalog, sets=("determinism",)) + select(catalog, sets=("prose-en",))
    hit = "canary-small/cloud-b/short-context"
    spared = [
        "canary-large/cloud-b/short-context",
        "canary-small/cloud-b/long-context",
        "canary-small/first-party/short-context",
    ]
    result = probe_cells([hit, *spared], probes, references=references(catalog))
    assert result.failure_rate(hit, "argmax_conformance") >= 0.8
    assert result.failure_rate(hit, "determinism") >= 0.8
    assert result.failure_rate(hit, "unexpected_script") == 0.0
    assert_clean(result, spared)


def test_misroute_shows_in_served_by_and_degrades_answers_only_at_its_front_door(
    fleet: RunningFleet, probe_cells: ProbeCells, catalog: Catalog
) -> None:
    fleet.set_fault(fault="misroute", platform="first-party", fraction=1.0, intensity=1.0)
    probes = select(catalog, scorer="known_answer") + select(catalog, sets=("longctx",))
    hit = "canary-small/first-party/front-door"
    spared = [
        "canary-small/first-party/short-context",
        "canary-small/first-party/long-context",
        "canary-small/cloud-a/front-door",
    ]
    result = probe_cells([hit, *spared], probes, repeat=2, references=references(catalog))
    assert result.failure_rate(hit, "routing") == 1.0
    assert set(result.served_pools[hit]) == {"long-context"}
    assert result.failure_rate(hit, "known_answer") >= 0.2
    assert result.failure_rate(hit, "determinism") >= 0.2
    assert result.failure_rate(hit, "long_context_recall") >= 0.3
    assert result.failure_rate(hit, "unexpected_script") == 0.0
    assert_clean(result, spared)


def test_corrupt_intensity_sets_how_often_a_request_is_hit(
    fleet: RunningFleet, probe_cells: ProbeCells, catalog: Catalog
) -> None:
    probes = select(catalog, sets=("prose-en", "facts", "determinism"))
    cell = "canary-large/cloud-b/long-context"
    rates = []
    for intensity in (0.0, 0.25, 1.0):
        fleet.set_fault(fault="corrupt", platform="cloud-b", pool="long-context", intensity=intensity)
        result = probe_cells([cell], probes, repeat=3, sessions=f"i{intensity}")
        rates.append(result.failure_rate(cell, "unexpected_script"))
    assert rates[0] == 0.0
    assert 0.08 <= rates[1] <= 0.45
    assert rates[2] >= 0.9


def test_a_fault_switched_off_leaves_no_trace(
    fleet: RunningFleet, probe_cells: ProbeCells, catalog: Catalog
) -> None:
    probes = select(catalog, sets=("prose-en", "code-python"))
    cell = "canary-small/cloud-a/short-context"
    fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=1.0)
    fleet.set_fault(fault="corrupt", platform="cloud-a", pool="short-context", intensity=1.0, enabled=False)
    assert_clean(probe_cells([cell], probes, references=references(catalog)), [cell])
