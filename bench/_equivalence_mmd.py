"""The MMD column of ``bench/equivalence.py``: sampled completions, round by round, and the product's test.

Each round draws ``SAMPLES`` completions of every sampled probe of the equivalence catalog from
one cell, decoded step by step from the fleet's own logits (:meth:`SyntheticModel.logits`: the
subtle fault's perturbation and the pool's bf16 rounding included) at the probe's temperature.
The draw is the categorical distribution of the tempered softmax, by inverse CDF in numpy: what
the fleet's JAX sampler (:func:`canary.fleet.sampler.fleet_step`) draws at temperature 1 without
top-k or top-p, at a seventh of its cost per row, which is what lets ``SEEDS`` seeds x both
intensities fit in the bench's time. A cell's rounds are memoised: a healthy peer's rounds serve
every fault.

The test is :func:`canary.stats.mmd.mmd_test` (the product's own, sequential permutation
p-value): the broken cell's samples against its peers' pooled, one peer per round in turn, after
the rounds in ``LOOKS`` at ``alpha / len(LOOKS)`` each (Bonferroni over the looks), while the
cell's output tokens stay within the budget. Model Equality Testing's anchor (77.4 % median power
at about 10 samples per prompt, alpha 0.05) is compared with the share of seeds whose first round
(10 samples per prompt a side) rejects at 0.05.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canary.fleet.model import AnswerBook, RowFaults, SyntheticModel  # noqa: E402
from canary.fleet.perturb import Perturbation  # noqa: E402
from canary.probing.equivalence import SampledProbe  # noqa: E402
from canary.stats.mmd import mmd_test  # noqa: E402

SAMPLES = 10  # per prompt and round, as in Model Equality Testing
LOOKS = (1, 2, 4, 7, 11)  # rounds after which the test looks (11 rounds: about 10,000 tokens)
MET_ALPHA = 0.05  # Model Equality Testing's level for its power figure


@dataclass
class SampleStream:
    """One cell's sampled rounds, drawn on demand and kept (peers serve every fault)."""

    model: SyntheticModel
    book: AnswerBook
    probes: Sequence[SampledProbe]
    dtype: str
    perturb: Perturbation | None
    seed: Sequence[int]
    rounds: list[tuple[list[tuple[int, str]], int]] = field(default_factory=list)

    def round(self, k: int) -> tuple[list[tuple[int, str]], int]:
        """Round ``k``'s (prompt index, text) samples and the output tokens they took."""
        while len(self.rounds) <= k:
            rng = np.random.default_rng([*self.seed, len(self.rounds)])
            self.rounds.append(self._draw(rng))
        return self.rounds[k]

    def _draw(self, rng: np.random.Generator) -> tuple[list[tuple[int, str]], int]:
        model, vocab = self.model, self.model.vocab
        jobs = [(i, p) for i, p in enumerate(self.probes) for _ in range(SAMPLES)]
        plans = [model.plan(self.book.lookup(p.prompt)) for _, p in jobs]
        temperature = np.array([p.temperature for _, p in jobs], dtype=np.float32)[:, None]
        logits = np.zeros((len(jobs), len(vocab)), dtype=np.float32)
        faults = [RowFaults(rng=rng, perturb=self.perturb) for _ in jobs]
        pieces: list[list[str]] = [[] for _ in jobs]
        pos, live = [0] * len(jobs), set(range(len(jobs)))
        for step in range(max(p.max_tokens for p in self.probes)):
            rows = sorted(live)  # finished completions are no longer decoded
            for k in rows:
                model.logits(plans[k], pos[k], step, faults[k], logits[k])
            live_logits = logits[rows]
            if self.dtype == "bf16":
                live_logits = live_logits.astype(ml_dtypes.bfloat16).astype(np.float32)
            scaled = live_logits / temperature[rows]
            weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
            cumulative = np.cumsum(weights, axis=1)
            drawn = rng.random(len(rows), dtype=np.float32) * cumulative[:, -1]
            chosen = np.minimum((cumulative < drawn[:, None]).sum(axis=1), len(vocab) - 1)
            for k, token in zip(rows, chosen.tolist(), strict=True):
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


@dataclass(frozen=True)
class MMDRun:
    tokens: int | None  # the cell's output tokens when the test said different (None: not within budget)
    rounds: int | None
    met_reject: bool  # the first round (10 samples per prompt a side) rejected at MET_ALPHA


def mmd_detection(
    cell: SampleStream, peers: Sequence[SampleStream], rng: np.random.Generator, budget: int, alpha: float
) -> MMDRun:
    """Rounds of the cell against its peers (one per round, in turn) until MMD says different."""
    level = alpha / len(LOOKS)
    permutations = math.ceil(1.0 / level)  # the fewest that can reach p < level
    mine: list[tuple[int, str]] = []
    theirs: list[tuple[int, str]] = []
    tokens, met_reject = 0, False
    for k in range(LOOKS[-1]):
        texts, spent = cell.round(k)
        if tokens + spent > budget:
            break
        mine += texts
        tokens += spent
        theirs += peers[k % len(peers)].round(k)[0]
        if k == 0:
            met = mmd_test(mine, theirs, rng, permutations=999, alpha=MET_ALPHA, exceedances=1)
            met_reject = met.p_value <= MET_ALPHA
        if k + 1 in LOOKS:
            # exceedances=1: the same decision as the default (see mmd_test), sooner.
            result = mmd_test(mine, theirs, rng, permutations=permutations, alpha=level, exceedances=1)
            if result.p_value < level:
                return MMDRun(tokens, k + 1, met_reject)
    return MMDRun(None, None, met_reject)
