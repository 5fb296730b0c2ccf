"""Subtle faults and echo: a pool answers fluently, its scored continuations move off its peers'.

Continuations are scored teacher-forced through the fleet's legacy completions endpoint with
``echo`` and ``logprobs``, as vLLM and llama.cpp return them.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from fleetkit import ProbeCells, select

from canary.fleet.perturb import Perturbation
from canary.fleet.running import RunningFleet
from canary.probing.catalog import Catalog
from canary.probing.equivalence import ForcedProbe, load_equivalence

POOLS = [f"{p}/{q}" for p in ("first-party", "cloud-a", "cloud-b") for q in ("short-context", "long-context")]


def forced_logprobs(fleet: RunningFleet, pool: str, probe: ForcedProbe) -> np.ndarray:
    body = {"model": "canary-small", "prompt": probe.text, "echo": True, "logprobs": 1, "max_tokens": 0}
    answer = httpx.post(f"{fleet.base_url}/{pool}/v1/completions", json=body).json()
    return np.array(continuation(answer["choices"][0]["logprobs"], len(probe.prompt)))


def continuation(logprobs: dict[str, Any], start: int) -> list[float]:
    """The logprobs of the tokens at or after character ``start`` of the echoed text."""
    pairs = zip(logprobs["token_logprobs"], logprobs["text_offset"], strict=True)
    return [lp for lp, at in pairs if at >= start]


def deviations(fleet: RunningFleet) -> dict[str, float]:
    """Each pool's mean absolute deviation from the median of the other pools, over every forced token."""
    probes = load_equivalence().forced[:5]
    scored = np.stack([np.concatenate([forced_logprobs(fleet, pool, p) for p in probes]) for pool in POOLS])
    medians = [np.median(np.delete(scored, i, 0), 0) for i in range(len(POOLS))]
    return {pool: float(np.abs(scored[i] - medians[i]).mean()) for i, pool in enumerate(POOLS)}


def test_echo_returns_the_prompt_tokens_with_logprobs_and_the_first_has_none(fleet: RunningFleet) -> None:
    probe = load_equivalence().forced[0]
    body = {"model": "canary-small", "prompt": probe.text, "echo": True, "logprobs": 2, "max_tokens": 0}
    answer = httpx.post(f"{fleet.base_url}/cloud-a/short-context/v1/completions", json=body).json()
    choice = answer["choices"][0]
    assert choice["text"] == probe.text
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == probe.text
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None and v <= 0.0 for v in lp["token_logprobs"][1:])
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
    scored = continuation(lp, len(probe.prompt))
    assert len(scored) > 10 and np.mean(scored) > -1.0  # the model's own answer: likely


def test_without_echo_max_tokens_zero_is_refused(fleet: RunningFleet) -> None:
    body = {"model": "canary-small", "prompt": "hi", "max_tokens": 0}
    assert httpx.post(f"{fleet.base_url}/cloud-a/v1/completions", json=body).status_code == 400


def test_healthy_pools_score_continuations_alike_bf16_and_fp32_included(fleet: RunningFleet) -> None:
    assert max(deviations(fleet).values()) < 0.002


@pytest.mark.parametrize(("fault", "intensity", "least"), [("quantize", 1.0, 0.01), ("kv_quant", 1.0, 0.003)])
def test_a_subtle_fault_moves_only_its_pools_scores(
    fleet: RunningFleet, fault: str, intensity: float, least: float
) -> None:
    fleet.set_fault(fault=fault, platform="cloud-a", pool="short-context", intensity=intensity)
    found = deviations(fleet)
    assert found["cloud-a/short-context"] > least
    assert max(v for pool, v in found.items() if pool != "cloud-a/short-context") < 0.002


def test_under_quantize_the_argmax_survives_so_pass_fail_scorers_barely_move(
    fleet: RunningFleet, catalog: Catalog, probe_cells: ProbeCells
) -> None:
    fleet.set_fault(fault="quantize", platform="cloud-a", pool="short-context", intensity=1.0)
    probes = select(catalog, sets=("prose-en", "arithmetic"))
    result = probe_cells(["canary-small/cloud-a/short-context"], probes)
    for metric in ("unexpected_script", "known_answer"):
        assert result.failure_rate("canary-small/cloud-a/short-context", metric) <= 0.1


def test_kv_quant_and_context_config_grow_with_position_and_quantize_does_not() -> None:
    kv = Perturbation(key=1, kv_quant=1.0)
    assert kv.std(1000) > 3 * kv.std(10)
    context = Perturbation(key=1, context=1.0)
    assert context.std(100) > 10 * context.std(2) and context.shrink(100) < context.shrink(2) < 1.0
    quantize = Perturbation(key=1, quantize=1.0)
    assert quantize.std(1000) == quantize.std(0) and quantize.shrink(1000) == 1.0
    same = quantize.noise(7, 3, 16), quantize.noise(7, 3, 16)
    assert np.array_equal(*same)  # fixed by pool and context: the same wrong logits every time


def test_context_config_applies_to_the_long_context_pool_it_names(fleet: RunningFleet) -> None:
    fleet.set_fault(fault="context_config", platform="first-party", pool="long-context", intensity=1.0)
    found = deviations(fleet)
    assert found["first-party/long-context"] > 0.002
    assert found["first-party/short-context"] < 0.002


def test_teacher_forced_logits_are_the_decoding_logits_row_by_row() -> None:
    from canary.fleet.config import default_fleet_config
    from canary.fleet.model import AnswerBook, RowFaults, SyntheticModel
    from canary.fleet.vocab import build_vocabulary

    equivalence = load_equivalence()
    book = AnswerBook(None, equivalence)
    model = SyntheticModel(default_fleet_config().models[0], build_vocabulary(book.texts()))
    plan = model.plan(book.forced[equivalence.forced[0].text][0])
    perturb = Perturbation(key=3, quantize=0.5, kv_quant=0.5, context=0.5, offset=9)
    for faults in (
        lambda: RowFaults(rng=np.random.default_rng(1), perturb=perturb, degrade=0.3),
        lambda: RowFaults(
            rng=np.random.default_rng(1), corrupt_steps=frozenset({2, 5}), confused_steps=frozenset({3})
        ),
    ):
        whole = model.teacher_forced(plan, faults())
        by_row, row_faults = np.empty_like(whole), faults()
        for j in range(len(whole)):
            model.logits(plan, j, j, row_faults, by_row[j])
        assert np.array_equal(whole, by_row)
