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
- **MMD** (:func:`canary.stats.mmd.mmd_test`, for providers without logprobs), at each fault's
  higher intensity: each round draws ``MMD_SAMPLES`` completions of every sampled probe from the
  broken cell and from one peer in turn through the fleet's own JAX sampler (temperature 1); the
  test looks after the rounds in ``MMD_LOOKS`` at ``ALPHA / len(MMD_LOOKS)``, over ``MMD_SEEDS``
  seeds (the sampling is the slow part); tokens counted: the broken cell's output tokens.
- **greedy agreement** (:func:`canary.stats.agreement.greedy_comparison`) and the **pass/fail
  scorers** (:func:`canary.scoring.score_completion`, peer CMH test as detection does) on the
  same stream of temperature-0 catalog answers, decoded from the fleet's own logits (at
  temperature 0 the fleet's sampler is the argmax); tokens counted: output tokens.

``ALPHA`` = 0.001 per comparison run is the detection budget of one false alarm per cell-year
spent on a daily audit (365 runs x 0.001 < 1). A fault not detected within ``BUDGET_TOKENS`` counts
as not detected (the median is then reported as None when more than half of the seeds miss).
False alarms: every healthy cell of the fleet against its peers, every seed, forced test to the
full budget. Run: ``.venv/bin/python bench/equivalence.py`` (``--seeds N`` to change the count).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_machine  # noqa: E402
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
from canary.stats.mmd import mmd_test  # noqa: E402
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
MMD_SEEDS = 5  # sampling through the JAX sampler is the slow part: fewer seeds, higher intensities only
MMD_SAMPLES = 10  # per prompt and round, as in Model Equality Testing
MMD_LOOKS = (1, 2, 4, 8)  # rounds after which the test looks
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


def sample_answers(
    world: World, dtype: str, perturb: Perturbation | None, samples: int, seed: int
) -> tuple[list[tuple[int, str]], int]:
    """``samples`` completions of every sampled probe, decoded in one batch by the fleet's JAX sampler.

    Returns (prompt index, text) pairs and the output tokens they took.
    """
    from canary.fleet.sampler import fleet_step  # JAX: imported only when MMD is measured

    model, vocab = world.model, world.model.vocab
    jobs = [(i, p) for i, p in enumerate(world.sampled) for _ in range(samples)]
    plans = [model.plan(world.book.lookup(p.prompt)) for _, p in jobs]
    rows = 1 << max(0, (len(jobs) - 1).bit_length())
    logits = np.zeros((rows, len(vocab)), dtype=np.float32)
    temperature = np.zeros(rows, dtype=np.float32)
    temperature[: len(jobs)] = [p.temperature for _, p in jobs]
    ones, zeros = np.ones(rows, dtype=np.float32), np.zeros(rows, dtype=np.float32)
    faults = [RowFaults(rng=np.random.default_rng([seed, k]), perturb=perturb) for k in range(len(jobs))]
    pos, pieces, live = [0] * len(jobs), [[] for _ in jobs], set(range(len(jobs)))
    for step in range(max(p.max_tokens for p in world.sampled)):
        for k in live:
            model.logits(plans[k], pos[k], step, faults[k], logits[k])
        batch = logits.astype(ml_dtypes.bfloat16).astype(np.float32) if dtype == "bf16" else logits
        chosen = np.asarray(
            fleet_step(batch, np.uint32(seed * 1000 + step), temperature, ones, zeros, top_k=0)
        )
        for k in list(live):
            token = int(chosen[k])
            if token == vocab.eos or len(pieces[k]) >= jobs[k][1].max_tokens:
                live.discard(k)
                continue
            pieces[k].append(vocab.tokens[token])
            if not model.is_inserted(plans[k], token):
                pos[k] += 1
        if not live:
            break
    texts = [(i, "".join(pieces[k])) for k, (i, _) in enumerate(jobs)]
    return texts, sum(len(p) for p in pieces)


def mmd_detection(
    world: World, broken: tuple[str, str], perturb: Perturbation | None, seed: int
) -> tuple[int | None, int | None]:
    """(output tokens, rounds) until MMD tells the broken cell's samples from its peers' (pooled)."""
    rng = np.random.default_rng([seed, 99])
    peers = [c for c in CELLS if c != broken]
    mine: list[tuple[int, str]] = []
    theirs: list[tuple[int, str]] = []
    tokens = 0
    alpha = ALPHA / len(MMD_LOOKS)
    for round_ in range(1, MMD_LOOKS[-1] + 1):
        texts, spent = sample_answers(world, DTYPE[broken[0]], perturb, MMD_SAMPLES, seed * 100 + round_)
        mine += texts
        tokens += spent
        # The peers' pool grows as fast as the cell's: one peer per round, in turn.
        peer = peers[(round_ - 1) % len(peers)]
        theirs += sample_answers(world, DTYPE[peer[0]], None, MMD_SAMPLES, seed * 100 + round_ + 50)[0]
        if round_ in MMD_LOOKS:
            if mmd_test(mine, theirs, rng, permutations=int(2 / alpha), alpha=alpha).p_value < alpha:
                return tokens, round_
        if tokens >= BUDGET_TOKENS:
            break
    return None, None


def median_or_none(values: list[int | None]) -> float | None:
    """The median with misses as +infinity: None when more than half missed."""
    ranked = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    if any(v is None for v in middle):
        return None
    return float(statistics.mean(v for v in middle if v is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--mmd-seeds", type=int, default=MMD_SEEDS, help="0 skips the MMD column")
    args = parser.parse_args()
    print_machine()
    started = time.perf_counter()
    world = build_world()
    healthy_answers = {
        cell: [greedy_answer(world, p, DTYPE[cell[0]], None)[0] for p in world.probes] for cell in CELLS
    }
    forced_tokens: dict[str, dict[str, float | None]] = {}
    forced_requests: dict[str, dict[str, float | None]] = {}
    detected_share: dict[str, dict[str, float]] = {}
    scorer_tokens: dict[str, dict[str, float | None]] = {}
    greedy_tokens: dict[str, dict[str, float | None]] = {}
    mmd_tokens: dict[str, dict[str, float | None]] = {}
    false_alarms = 0
    healthy_streams = {
        seed: {cell: ForcedStream(world, cell, seed, None) for cell in CELLS} for seed in range(args.seeds)
    }
    for seed in range(args.seeds):  # healthy fleet: every cell against its peers, to the full budget
        streams = healthy_streams[seed]
        for cell in CELLS:
            tokens, _ = forced_detection(streams[cell], [streams[c] for c in CELLS if c != cell])
            false_alarms += tokens is not None
    print(f"healthy fleet: {false_alarms} false alarms over {args.seeds} seeds x {len(CELLS)} cells")
    print(
        f"{'fault':<16}{'intensity':>10}{'forced tokens':>15}{'requests':>10}{'detected':>10}"
        f"{'greedy tokens':>15}{'scorer tokens':>15}{'MMD tokens':>12}"
    )
    for fault, (broken, intensities) in FAULTS.items():
        for intensity in intensities:
            found_tokens, found_requests, found_scorer, found_greedy = [], [], [], []
            for seed in range(args.seeds):
                perturb = perturbation(fault, intensity, broken, seed)
                peers = [healthy_streams[seed][c] for c in CELLS if c != broken]
                tokens, requests = forced_detection(ForcedStream(world, broken, seed, perturb), peers)
                found_tokens.append(tokens)
                found_requests.append(requests)
                peer_answers = {
                    p.id: [healthy_answers[c][i] for c in CELLS if c != broken]
                    for i, p in enumerate(world.probes)
                }
                scorer, greedy = stream_detection(world, broken, perturb, peer_answers)
                found_scorer.append(scorer)
                found_greedy.append(greedy)
            found_mmd = [
                mmd_detection(world, broken, perturbation(fault, intensity, broken, seed), seed)[0]
                for seed in range(args.mmd_seeds if intensity == max(intensities) else 0)
            ]
            key = f"{intensity:g}"
            mmd_tokens.setdefault(fault, {})[key] = median_or_none(found_mmd) if found_mmd else None
            forced_tokens.setdefault(fault, {})[key] = median_or_none(found_tokens)
            forced_requests.setdefault(fault, {})[key] = median_or_none(found_requests)
            detected_share.setdefault(fault, {})[key] = sum(t is not None for t in found_tokens) / args.seeds
            scorer_tokens.setdefault(fault, {})[key] = median_or_none(found_scorer)
            greedy_tokens.setdefault(fault, {})[key] = median_or_none(found_greedy)
            print(
                f"{fault:<16}{intensity:>10g}{_show(forced_tokens[fault][key]):>15}"
                f"{_show(forced_requests[fault][key]):>10}{detected_share[fault][key]:>10.0%}"
                f"{_show(greedy_tokens[fault][key]):>15}{_show(scorer_tokens[fault][key]):>15}"
                f"{_show(mmd_tokens[fault][key]):>12}"
            )
    high = {fault: forced_tokens[fault][f"{max(i):g}"] for fault, (_, i) in FAULTS.items()}
    bar = all(v is not None and v <= 10_000 for v in high.values()) and false_alarms == 0
    seconds = time.perf_counter() - started
    print(
        f"budget {BUDGET_TOKENS:,} tokens, alpha {ALPHA} per run ({MAX_LOOKS} looks), "
        f"{args.seeds} seeds, {seconds:.0f} s"
    )
    print(
        "bar (every fault within 10,000 tokens at its higher intensity, 0 false alarms): "
        + ("met" if bar else "NOT met")
    )
    print(
        json.dumps(
            {
                "tokens_to_detect": forced_tokens,
                "requests_to_detect": forced_requests,
                "detected_share": detected_share,
                "greedy_tokens_to_detect": greedy_tokens,
                "mmd_tokens_to_detect": mmd_tokens,
                "mmd_seeds": args.mmd_seeds,
                "scorer_tokens_to_detect": scorer_tokens,
                "false_alarms": false_alarms,
                "seeds": args.seeds,
                "budget_tokens": BUDGET_TOKENS,
                "alpha": ALPHA,
                "bar_met": bar,
                "seconds": round(seconds, 1),
            }
        )
    )


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


if __name__ == "__main__":
    main()
