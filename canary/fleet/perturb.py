"""The subtle faults: logit perturbations that answer fluently but not quite like the model.

Pass/fail scorers barely see these; the equivalence tests (teacher-forced log-likelihood,
greedy agreement, MMD on samples) are built for them. Each is a fixed property of the pool —
its weights, its cache, its configuration — so for a given context the perturbation is the same
on every request (seeded by the pool and the context, never by the request), as real quantized
weights give the same wrong logits every time:

- ``quantize``: weights rounded to few bits perturb every logit by an independent
  ``N(0, (QUANTIZE_STD * intensity)^2)``; intensity 1.0 is the size 4-bit weights cause (the
  argmax survives at nearly every step: the reference leads its alternatives by 1.5–9 nats),
  0.25 about 8-bit.
- ``kv_quant``: a quantized KV cache perturbs attention over every cached position, so the
  error grows with the position: ``KV_STD * intensity * sqrt(position / KV_POSITIONS)``, up to
  ``KV_CAP`` times ``KV_STD * intensity`` (a long haystack does not drown the answer).
- ``context_config``: a long-context pool started with a subtly wrong position encoding
  (RoPE base): positions far from the start are encoded wrong, so the perturbation grows with
  position up to ``CONTEXT_STD * intensity`` at ``CONTEXT_POSITIONS``, and the model is a
  little less sure of itself there (margins shrink by up to ``CONTEXT_SHRINK * intensity``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np

QUANTIZE_STD = 0.5
KV_STD = 0.35
KV_POSITIONS = 256
KV_CAP = 2.0
CONTEXT_STD = 0.4
CONTEXT_SHRINK = 0.15
CONTEXT_POSITIONS = 64
NOISE_ROWS = 1024


def pool_key(*parts: str) -> int:
    """A seed fixed by the pool (and model) whose weights or configuration are perturbed."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Perturbation:
    """How one pool's subtle faults move the logits of one request.

    ``offset`` is the number of tokens before the answer (the prompt): the KV cache and the
    position encoding see them too.
    """

    key: int
    quantize: float = 0.0
    kv_quant: float = 0.0
    context: float = 0.0
    offset: int = 0

    def std(self, pos: int) -> float:
        """The logit noise's standard deviation at answer position ``pos``."""
        at = self.offset + pos + 1
        q = QUANTIZE_STD * self.quantize
        kv = KV_STD * self.kv_quant * min(KV_CAP, math.sqrt(at / KV_POSITIONS))
        ctx = CONTEXT_STD * self.context * min(1.0, at / CONTEXT_POSITIONS)
        return math.sqrt(q * q + kv * kv + ctx * ctx)

    def shrink(self, pos: int) -> float:
        """The factor on the reference's margins at ``pos`` (1.0 without ``context_config``)."""
        return 1.0 - CONTEXT_SHRINK * self.context * min(1.0, (self.offset + pos + 1) / CONTEXT_POSITIONS)

    def noise(self, context_seed: int, pos: int, size: int) -> np.ndarray:
        """The perturbation of every logit at ``pos`` of the context ``context_seed`` (fixed by both).

        A row of the pool's fixed noise table, picked by a hash of the context and position:
        seeding a generator per step costs more than the rest of the step.
        """
        table = _noise_table(self.key, size)
        row = pool_key(str(context_seed), str(self.offset + pos)) % NOISE_ROWS
        noise: np.ndarray = table[row] * np.float32(self.std(pos))
        return noise


@functools.lru_cache(maxsize=16)
def _noise_table(key: int, size: int) -> np.ndarray:
    """``NOISE_ROWS`` x ``size`` standard normals fixed by the pool's key."""
    return np.random.default_rng(key).standard_normal((NOISE_ROWS, size), dtype=np.float32)
