"""Tokens needed to tell a subtly broken pool from its peers, black-box, against pass/fail scorers.

For each subtle fault of the reference fleet (``quantize``, ``kv_quant``, ``context_config``) at
two intensities, over ``SEEDS`` seeds (each seed is another set of "quantized weights": another
perturbation, and other numeric jitter), one pool of ``canary-small`` is broken and compared with
its five peers (the same model on the other pools and platforms, bf16 and fp32), with no
reference implementation:

- **forced** (teacher-forced log-likelihood, :func:`canary.stats.equivalence.forced_comparison`):
  the equivalence catalog's forced probes are scored through the fleet's own echo code
  (:func:`canary.fleet.forced.echo_logprobs`), cycling through the catalog, one request at a
  time; after each request the test looks at everything so far, at ``ALPHA / MAX_LOOKS`` per
  look (Bonferroni over the looks keeps the whole run at ``ALPHA``). Tokens counted: the scored
  continuation tokens (the request generates none).
- **MMD** (:func:`canary.stats.mmd.mmd_test`, for providers without logprobs; see
  :mod:`bench._equivalence_mmd`): rounds of 10 completions of every sampled probe from the broken
  cell and from one peer in turn, decoded from the fleet's own logits at temperature 1; the test
  looks after rounds 1, 2, 4, 7 and 11 at ``ALPHA / 5``; tokens counted: the broken cell's output
  tokens. ``MMD power@10``: the share of seeds whose first round (10 samples per prompt a side)
  rejects at 0.05, Model Equality Testing's setting.
- **greedy agreement** (:func:`canary.stats.agreement.greedy_comparison`) and the **pass/fail
  scorers** (:func:`canary.scoring.score_completion`, peer CMH test as detection does) on the
  same stream of temperature-0 catalog answers, decoded from the fleet's own logits (at
  temperature 0 the fleet's sampler is the argmax); tokens counted: output tokens.

``ALPHA`` = 0.001 per comparison run is the detection budget of one false alarm per cell-year
spent on a daily audit (365 runs x 0.001 < 1). A fault not detected within ``BUDGET_TOKENS`` counts
as not detected (the median is then reported as None when more than half of the seeds miss).
False alarms: every healthy cell of the fleet against its peers, every seed, forced test to the
full budget; MMD: the two cells the faults break, healthy, against their peers. The forced
figures are set against Token-DiFR's and Model Equality Testing's (:mod:`bench._equivalence_report`).
Run: ``.venv/bin/python bench/equivalence.py`` (``--seeds N``, ``--mmd-seeds N`` to change the counts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_machine  # noqa: E402
from bench._equivalence_mmd import MET_ALPHA, SampleStream, mmd_detection  # noqa: E402
from bench._equivalence_report import Figures, print_anchors, share, show  # noqa: E402
from canary.fleet.config import default_fleet_config  # noqa: E402
from canary.fleet.forced import echo_logprobs  # noqa: E402
from canary.fleet.model import AnswerBook, RowFaults, SyntheticModel  # noqa: E402
from canary.fleet.perturb import Perturbation, pool_key  # noqa: E402
from canary.fleet.vocab import build_vocabulary, tokenize  # noqa: E402
from canary.probing.catalog import Probe, load_catalog  # noqa: E402
from canary.probing.completion import Completion  # noqa: E402
from canary.probing.equivalence import ForcedProbe, SampledProbe, load_equivalence  # noqa: E402
from canary.scoring import ScoringContext, score_completion  # noqa: E402
from canary.stats.agreement import greedy_comparison  # noqa: E402
from canary.stats.equivalence import forced_comparison  # noqa: E402
from canary.stats.rates import cmh_test  # noqa: E402

ALPHA = 0.001
MAX_LOOKS = 250
BUDGET_TOKENS = 10_000
SEEDS = 50
CELLS = [(p, q) for p in ("first-party", "cloud-a", "cloud-b") for q in ("short-context", "long-context")]
DTYPE = {"first-party": "bf16", "cloud-a": "bf16", "cloud-b": "fp32"}
FAULTS = {  # fault -> (broken pool, intensities)
    "quantize": (("cloud-a", "short-context"), (0.25, 1.0)),
    "kv_quant": (("cloud-a", "short-context"), (0.25, 1.0)),
    "context_config": (("first-party", "long-context"), (0.5, 1.0)),
}
FAULT_RUNS = [(fault, intensity) for fault, (_, intensities) in FAULTS.items() for intensity in intensities]
PASSFAIL_SETS = ("prose-en", "arithmetic", "facts", "code-python", "code-javascript", "code-sql", "code-bash")


@dataclass
class World:
    """The fleet's model and catalogs, built once, as the fleet builds them."""

    model: SyntheticModel
    book: AnswerBook
    forced: tuple[ForcedProbe, ...]
    sampled: tuple[SampledProbe, ...]
    probes: list[Probe]
    prompt_tokens: dict[str, int] = field(default_factory=dict)


def build_world() -> World:
    equivalence = load_equivalence()
    catalog = load_catalog()
    book = AnswerBook(catalog, equivalence)
    model = SyntheticModel(default_fleet_config().models[0], build_vocabulary(book.texts()))
    probes = [p for p in catalog.probes if p.probe_set in PASSFAIL_SETS and p.spec.temperature == 0.0]
    prompt_tokens = {p.id: len(tokenize(p.prompt)) for p in equivalence.forced}
    return World(model, book, equivalence.forced, equivalence.sampled, probes, prompt_tokens)


def perturbation(
    fault: str | None, intensity: float, cell: tuple[str, str], seed: int
) -> Perturbation | None:
    if fault is None:
        return None
    key = pool_key(*cell, "canary-small", str(seed))
    return Perturbation(
        key=key,
        quantize=intensity if fault == "quantize" else 0.0,
        kv_quant=intensity if fault == "kv_quant" else 0.0,
        context=intensity if fault == "context_config" else 0.0,
    )


class ForcedStream:
    """One cell's scored continuations, request by request, memoised (peers are shared across faults)."""

    def __init__(self, world: World, cell: tuple[str, str], seed: int, perturb: Perturbation | None) -> None:
        self.world, self.dtype, self.perturb = world, DTYPE[cell[0]], perturb
        self.rng = np.random.default_rng([seed, CELLS.index(cell), 7])
        self.requests: list[np.ndarray] = []

    def request(self, k: int) -> np.ndarray:
        while len(self.requests) <= k:
            probe = self.world.forced[len(self.requests) % len(self.world.forced)]
            faults = RowFaults(rng=self.rng, perturb=self.perturb)
            infos = echo_logprobs(self.world.model, self.world.book, probe.text, faults, self.dtype, 0)
            scored = infos[self.world.prompt_tokens[probe.id] :]
            self.requests.append(np.array([i.logprob for i in scored if i is not None]))
        return self.requests[k]


def forced_detection(cell: ForcedStream, peers: list[ForcedStream]) -> tuple[int | None, int | None]:
    """(tokens, requests) until the forced test says ``different``, or (None, None) within the budget."""
    tokens, k = 0, 0
    xs: list[np.ndarray] = []
    ps: list[list[np.ndarray]] = [[] for _ in peers]
    while tokens < BUDGET_TOKENS and k < MAX_LOOKS:
        xs.append(cell.request(k))
        for j, peer in enumerate(peers):
            ps[j].append(peer.request(k))
        tokens += len(xs[-1])
        k += 1
        if k > 24 and k % 8:
            continue  # every request for the first two catalog passes, then every eighth
        result = forced_comparison(
            np.concatenate(xs), np.stack([np.concatenate(p) for p in ps]), alpha=ALPHA / MAX_LOOKS
        )
        if result.verdict == "different":
            return tokens, k
    return None, None


def greedy_answer(world: World, probe: Probe, dtype: str, perturb: Perturbation | None) -> tuple[str, int]:
    """The temperature-0 answer (the argmax at every step, as the fleet's sampler at T = 0) and its tokens."""
    model = world.model
    answer = world.book.lookup(probe.prompt)
    plan = model.plan(answer)
    faults = RowFaults(rng=np.random.default_rng(0), perturb=perturb)
    out = np.empty(len(model.vocab), dtype=np.float32)
    pos, pieces = 0, []
    for step in range(probe.spec.max_tokens):
        model.logits(plan, pos, step, faults, out)
        row = out.astype(ml_dtypes.bfloat16).astype(np.float32) if dtype == "bf16" else out
        token = int(np.argmax(row))
        if token == model.vocab.eos:
            break
        pieces.append(model.vocab.tokens[token])
        if not model.is_inserted(plan, token):
            pos += 1
    return "".join(pieces), len(pieces)


def failed(probe: Probe, text: str) -> bool:
    completion = Completion(ok=True, text=text)
    scores = score_completion(probe, completion, ScoringContext(reference_text=text))  # its own reference
    return any(not s.passed for s in scores)


def stream_detection(
    world: World, cell: tuple[str, str], perturb: Perturbation | None, peers: dict[str, list[str]]
) -> tuple[int | None, int | None]:
    """(scorer tokens, greedy-agreement tokens) to detect, on one stream of temperature-0 passes."""
    answers = [greedy_answer(world, p, DTYPE[cell[0]], perturb) for p in world.probes]
    fails = np.array([failed(p, t) for p, (t, _) in zip(world.probes, answers, strict=True)], dtype=np.int64)
    peer_fails = np.array([sum(failed(p, t) for t in peers[p.id]) for p in world.probes], dtype=np.int64)
    per_pass = sum(n for _, n in answers)
    scorer = greedy = None
    passes = 0
    while (scorer is None or greedy is None) and passes * per_pass < BUDGET_TOKENS:
        passes += 1
        alpha = ALPHA / MAX_LOOKS
        n = np.full(len(fails), passes)
        if (
            scorer is None
            and cmh_test(fails * passes, n, peer_fails * passes, n * len(CELLS[1:])).p_value < alpha
        ):
            scorer = passes * per_pass
        if greedy is None:
            mine = {p.id: [t] * passes for p, (t, _) in zip(world.probes, answers, strict=True)}
            theirs = {p.id: [[t] * passes for t in peers[p.id]] for p in world.probes}
            if greedy_comparison(mine, theirs, alpha=alpha)[0].verdict == "different":
                greedy = passes * per_pass
    return scorer, greedy


def median_or_none(values: list[int | None]) -> float | None:
    """The median with misses as +infinity: None when more than half missed."""
    ranked = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    if any(v is None for v in middle):
        return None
    return float(statistics.mean(v for v in middle if v is not None))


def sample_stream(world: World, cell: tuple[str, str], seed: int, fault: int = 0) -> SampleStream:
    """One cell's sampled rounds; ``fault``: 0 healthy, else which (fault, intensity) breaks it."""
    perturb = None
    if fault:
        name, intensity = FAULT_RUNS[fault - 1]
        perturb = perturbation(name, intensity, cell, seed)
    return SampleStream(
        world.model, world.book, world.sampled, DTYPE[cell[0]], perturb, (seed, CELLS.index(cell), fault)
    )


@dataclass
class FaultRuns:
    """Every seed's tokens (None: not within the budget) to detect one fault at one intensity."""

    forced: list[int | None] = field(default_factory=list)
    requests: list[int | None] = field(default_factory=list)
    scorer: list[int | None] = field(default_factory=list)
    greedy: list[int | None] = field(default_factory=list)
    mmd: list[int | None] = field(default_factory=list)
    met: list[bool] = field(default_factory=list)  # the first MMD round rejected at MET_ALPHA


def measure_fault(
    world: World,
    fault: int,
    seeds: int,
    healthy: dict[int, dict[tuple[str, str], ForcedStream]],
    sampled: dict[int, dict[tuple[str, str], SampleStream]],
    healthy_answers: dict[tuple[str, str], list[str]],
) -> FaultRuns:
    """Forced, greedy and scorer runs over ``seeds`` seeds, MMD over the seeds in ``sampled``."""
    name, intensity = FAULT_RUNS[fault - 1]
    broken = FAULTS[name][0]
    runs = FaultRuns()
    peer_answers = {
        p.id: [healthy_answers[c][i] for c in CELLS if c != broken] for i, p in enumerate(world.probes)
    }
    for seed in range(seeds):
        perturb = perturbation(name, intensity, broken, seed)
        peers = [healthy[seed][c] for c in CELLS if c != broken]
        tokens, requests = forced_detection(ForcedStream(world, broken, seed, perturb), peers)
        scorer, greedy = stream_detection(world, broken, perturb, peer_answers)
        runs.forced.append(tokens)
        runs.requests.append(requests)
        runs.scorer.append(scorer)
        runs.greedy.append(greedy)
        if seed in sampled:
            cell = sample_stream(world, broken, seed, fault)
            mmd_peers = [sampled[seed][c] for c in CELLS if c != broken]
            run = mmd_detection(cell, mmd_peers, np.random.default_rng([seed, 99]), BUDGET_TOKENS, ALPHA)
            runs.mmd.append(run.tokens)
            runs.met.append(run.met_reject)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--mmd-seeds", type=int, default=SEEDS, help="0 skips the MMD column")
    args = parser.parse_args()
    print_machine()
    started, cpu_started = time.perf_counter(), time.process_time()
    world = build_world()
    seeds, mmd_seeds = args.seeds, min(args.mmd_seeds, args.seeds)
    healthy_answers = {
        cell: [greedy_answer(world, p, DTYPE[cell[0]], None)[0] for p in world.probes] for cell in CELLS
    }
    healthy = {seed: {cell: ForcedStream(world, cell, seed, None) for cell in CELLS} for seed in range(seeds)}
    sampled = {seed: {cell: sample_stream(world, cell, seed) for cell in CELLS} for seed in range(mmd_seeds)}
    false_alarms = 0
    for seed in range(seeds):  # healthy fleet: every cell against its peers, to the full budget
        streams = healthy[seed]
        for cell in CELLS:
            tokens, _ = forced_detection(streams[cell], [streams[c] for c in CELLS if c != cell])
            false_alarms += tokens is not None
    mmd_false_alarms, met_healthy = 0, 0
    broken_cells = sorted({broken for broken, _ in FAULTS.values()})
    for seed in range(mmd_seeds):  # the healthy cells that the faults break, MMD against their peers
        for cell in broken_cells:
            peers = [sampled[seed][c] for c in CELLS if c != cell]
            run = mmd_detection(
                sampled[seed][cell], peers, np.random.default_rng([seed, 98]), BUDGET_TOKENS, ALPHA
            )
            mmd_false_alarms += run.tokens is not None
            met_healthy += run.met_reject
    healthy_runs = len(broken_cells) * mmd_seeds
    print(
        f"healthy fleet: {false_alarms} false alarms (forced) over {seeds} seeds x {len(CELLS)} cells; "
        f"MMD {mmd_false_alarms} over {mmd_seeds} seeds x {len(broken_cells)} cells "
        f"(first round at alpha {MET_ALPHA}: {met_healthy}/{healthy_runs} rejected)"
    )
    print(
        f"{'fault':<16}{'intensity':>10}{'forced tokens':>15}{'requests':>10}{'detected':>10}"
        f"{'greedy tokens':>15}{'scorer tokens':>15}{'MMD tokens':>12}{'MMD power@10':>14}"
    )
    figures = Figures()
    for fault, (name, intensity) in enumerate(FAULT_RUNS, start=1):
        runs = measure_fault(world, fault, seeds, healthy, sampled, healthy_answers)
        key = f"{intensity:g}"
        for table, values in (
            (figures.forced, runs.forced), (figures.requests, runs.requests), (figures.scorer, runs.scorer),
            (figures.greedy, runs.greedy), (figures.mmd, runs.mmd),
        ):  # fmt: skip
            table.setdefault(name, {})[key] = median_or_none(values) if values else None
        figures.detected.setdefault(name, {})[key] = sum(t is not None for t in runs.forced) / seeds
        figures.met_power.setdefault(name, {})[key] = sum(runs.met) / len(runs.met) if runs.met else None
        print(
            f"{name:<16}{intensity:>10g}{show(figures.forced[name][key]):>15}"
            f"{show(figures.requests[name][key]):>10}{figures.detected[name][key] or 0:>10.0%}"
            f"{show(figures.greedy[name][key]):>15}{show(figures.scorer[name][key]):>15}"
            f"{show(figures.mmd[name][key]):>12}{share(figures.met_power[name][key]):>14}"
        )
    anchors = print_anchors(figures, len(world.sampled))
    high = {fault: figures.forced[fault][f"{max(i):g}"] for fault, (_, i) in FAULTS.items()}
    bar = all(v is not None and v <= BUDGET_TOKENS for v in high.values()) and false_alarms == 0
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    load = os.getloadavg()[0]
    print(
        f"budget {BUDGET_TOKENS:,} tokens, alpha {ALPHA} per run ({MAX_LOOKS} looks), {seeds} seeds "
        f"(MMD {mmd_seeds}), {seconds:.0f} s wall, {cpu:.0f} s CPU, load {load:.2f}"
    )
    print(
        "bar (every fault within 10,000 tokens at its higher intensity, 0 false alarms): "
        + ("met" if bar else "NOT met")
    )
    print(
        json.dumps(
            {
                "tokens_to_detect": figures.forced,
                "requests_to_detect": figures.requests,
                "detected_share": figures.detected,
                "greedy_tokens_to_detect": figures.greedy,
                "mmd_tokens_to_detect": figures.mmd,
                "mmd_power_at_10_samples": figures.met_power,
                "mmd_seeds": mmd_seeds,
                "scorer_tokens_to_detect": figures.scorer,
                "anchors": anchors,
                "false_alarms": false_alarms,
                "mmd_false_alarms": mmd_false_alarms,
                "seeds": seeds,
                "budget_tokens": BUDGET_TOKENS,
                "alpha": ALPHA,
                "bar_met": bar,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu, 1),
                "load": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
