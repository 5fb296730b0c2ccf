"""Prompt log-probabilities for ``echo`` requests, as vLLM and the llama.cpp server return them.

A legacy completions request with ``echo`` and ``logprobs`` gets back the prompt's own tokens
with their log-probabilities (the first token has none), so a fixed continuation appended to a
fixed prompt is scored teacher-forced, in one forward pass and without sampling noise.

When the text is one of the equivalence catalog's forced probes (prompt + continuation), the
continuation's tokens are scored by the synthetic model exactly as decoding would see them:
the same logits (faults, subtle perturbations and bf16 rounding included) at each position of
the continuation taken as the answer. Any other prompt token gets a fixed pseudo
log-probability (moved by a subtle fault's noise), enough for a client that only wants the shape.

Real servers are not batch-invariant: the same text scored twice differs in the last digits.
:data:`NUMERIC_JITTER` (nats, on the logits that carry the mass, per request) stands for that,
so a healthy pool is never exactly equal to its peers and no test can rely on exact equality.
"""

from __future__ import annotations

from dataclasses import replace

import ml_dtypes
import numpy as np

from canary.fleet.engine import TokenInfo, token_info
from canary.fleet.faults import unit_hash
from canary.fleet.model import AnswerBook, RowFaults, SyntheticModel
from canary.fleet.vocab import tokenize

NUMERIC_JITTER = 0.003


def _pseudo(model: SyntheticModel, index: int, token: str, faults: RowFaults) -> TokenInfo:
    """A fixed log-probability for a prompt token the synthetic model has no plan for."""
    logprob = -0.2 - 7.0 * unit_hash("prompt-token", model.spec.name, str(index), token)
    if faults.perturb is not None:
        logprob = min(0.0, logprob + 0.5 * faults.perturb.std(index) * float(faults.rng.standard_normal()))
    return TokenInfo(token, logprob, ((token, logprob),))


def echo_logprobs(
    model: SyntheticModel,
    book: AnswerBook,
    text: str,
    faults: RowFaults,
    dtype: str,
    top_n: int,
) -> list[TokenInfo | None]:
    """The tokens of ``text`` with their log-probabilities (None for the first), as echo returns them."""
    forced = book.forced.get(text)
    start = forced[1] if forced is not None else len(text)
    prompt_tokens = tokenize(text[:start])
    infos: list[TokenInfo | None] = [
        None if i == 0 else _pseudo(model, i, token, faults) for i, token in enumerate(prompt_tokens)
    ]
    if forced is None:
        return infos
    plan = model.plan(forced[0])
    if faults.perturb is not None:
        faults = replace(faults, perturb=replace(faults.perturb, offset=len(prompt_tokens)))
    ref = plan.ref[:-1]
    rows = model.teacher_forced(plan, faults)
    # The jitter moves the tokens that carry the mass (the reference and its alternatives); the
    # tail's share of the log-sum-exp is below e^-6, too little for its jitter to show.
    carriers = np.concatenate([ref[:, None], plan.alts[: len(ref)]], axis=1)
    at = np.arange(len(ref))[:, None]
    rows[at, carriers] += faults.rng.standard_normal(carriers.shape, dtype=np.float32) * np.float32(
        NUMERIC_JITTER
    )
    if dtype == "bf16":
        rows = rows.astype(ml_dtypes.bfloat16).astype(np.float32)
    if top_n > 0:
        infos.extend(token_info(model.vocab, int(t), rows[j], top_n) for j, t in enumerate(ref.tolist()))
        return infos
    # One forward pass over the whole continuation: log-softmax of every row at once.
    peak = rows.max(axis=1, keepdims=True)
    lse = (np.log(np.exp(rows - peak).sum(axis=1, dtype=np.float64, keepdims=True)) + peak)[:, 0]
    logprobs = rows[np.arange(len(ref)), ref] - lse
    tokens = model.vocab.tokens
    pairs = zip(ref.tolist(), logprobs.tolist(), strict=True)
    infos.extend(TokenInfo(tokens[t], float(lp), ()) for t, lp in pairs)
    return infos
