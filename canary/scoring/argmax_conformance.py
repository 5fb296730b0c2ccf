"""``argmax_conformance``: the sampler picked tokens its own logprobs allow.

The postmortem's approximate top-k bug sometimes dropped the most probable token. When the
provider returns logprobs with top alternatives, that shows directly:

- at temperature 0, a step whose chosen token is less probable than the best alternative (by
  more than :data:`LOGPROB_TOLERANCE`) is a violation;
- at temperature > 0 with ``top_p`` < 1, a step whose chosen token lies outside the nucleus is a
  violation: the alternatives strictly more probable than it already hold at least ``top_p`` of
  the mass. Only alternatives clearly more probable count, so ties and a truncated
  ``top_logprobs`` list never produce a false alarm. The nucleus is computed from the returned
  logprobs; if a provider returns temperature-1 logprobs while sampling at T < 1, the true
  nucleus is a prefix of this one, so the check stays conservative.

Tokens are compared by log-probability, not by text, so providers that spell tokens
differently in ``top`` and ``token`` (bytes, leading spaces) are judged correctly. A completion
without logprobs gets no score: only probes with ``logprobs = true`` request them.
"""

from __future__ import annotations

import math
from typing import Any

from canary.probing.catalog import Probe
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring._text import MAX_SPANS, clip, snippet
from canary.scoring.base import Score, ScoringContext

LOGPROB_TOLERANCE = 1e-3
"""Logprob gap (nats) treated as a tie: bf16 logits and rounded API logprobs are not exact."""

MASS_TOLERANCE = 1e-3
"""Probability mass slack on the top-p threshold, for the same reason."""


def _violation(step: TokenLogprob, temperature: float, top_p: float | None) -> dict[str, Any] | None:
    """Why one step breaks the sampler's contract, or None if it conforms or cannot be judged."""
    best_token, best = "", -math.inf
    for token, logprob in step.top:
        if logprob > best:  # NaN never compares greater, so it is skipped
            best_token, best = token, logprob
    if best == -math.inf or best == math.inf:
        return None
    chosen = step.logprob
    if math.isnan(chosen) or chosen == -math.inf:
        reason = "chosen token has no probability"
    elif temperature == 0.0:
        if best <= chosen + LOGPROB_TOLERANCE:
            return None
        reason = "not argmax"
    else:
        if top_p is None or top_p >= 1.0:
            return None
        threshold = chosen + LOGPROB_TOLERANCE
        # A logprob above 0 is malformed; clamping keeps exp() finite (the mass then exceeds 1).
        mass_before = sum(math.exp(min(lp, 0.0)) for _, lp in step.top if threshold < lp < math.inf)
        if mass_before < top_p + MASS_TOLERANCE:
            return None
        reason = "outside top-p nucleus"
        return {
            "reason": reason,
            "mass_before": round(mass_before, 5),
            "top": clip(best_token, 20),
            "top_logprob": _json_float(best),
        }
    return {"reason": reason, "top": clip(best_token, 20), "top_logprob": _json_float(best)}


def _json_float(value: float) -> float | str:
    """Rounded for a compact detail; NaN and infinities as text, since JSONB rejects them."""
    return round(value, 5) if math.isfinite(value) else str(value)


def _describe(
    step: TokenLogprob, index: int, offset: int, text: str, problem: dict[str, Any]
) -> dict[str, Any]:
    return {
        "step": index,
        "offset": offset,
        "chosen": clip(step.token, 20),
        "chosen_logprob": _json_float(step.logprob),
        **problem,
        "context": snippet(text, offset, offset + len(step.token)),
    }


class ArgmaxConformanceScorer:
    name = "argmax_conformance"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        tokens = completion.tokens
        temperature = probe.spec.temperature
        top_p = probe.spec.top_p
        if not tokens or (temperature > 0.0 and (top_p is None or top_p >= 1.0)):
            return []
        checked = 0
        violations = 0
        listed: list[dict[str, Any]] = []
        offset = 0
        text = "".join(t.token for t in tokens)
        for index, step in enumerate(tokens):
            if step.top:
                checked += 1
                problem = _violation(step, temperature, top_p)
                if problem is not None:
                    violations += 1
                    if len(listed) < MAX_SPANS:
                        listed.append(_describe(step, index, offset, text, problem))
            offset += len(step.token)
        if checked == 0:
            return []
        detail: dict[str, Any] = {"steps_checked": checked}
        if violations:
            mode = "argmax" if temperature == 0.0 else "top_p"
            detail.update(violations=violations, mode=mode, steps=listed)
        return [Score(self.name, violations == 0, violations / checked, detail)]
