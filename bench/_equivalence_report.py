"""The report of ``bench/equivalence.py``: its tables, and the forced test against the anchors.

Token-DiFR (Karvonen et al., 2025) detects 4-bit weight quantization with AUC > 0.999 within
300 output tokens and KV-cache quantization with about 10,000, with a trusted reference
implementation and a shared sampling seed; Model Equality Testing (Gao, Liang & Guestrin, ICLR
2025) reaches a median 77.4 % power at about 10 samples per prompt. The goal: within 2x of
those token counts, black-box, against peers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench._equivalence_mmd import MET_ALPHA

ANCHORS = [  # (fault, intensity, tokens, source): Token-DiFR's, with a trusted reference and a shared seed
    ("quantize", "1", 300, "Token-DiFR, 4-bit weights, AUC > 0.999"),
    ("kv_quant", "1", 10_000, "Token-DiFR, KV-cache quantization"),
    ("kv_quant", "0.25", 10_000, "Token-DiFR, KV-cache quantization"),
]
MET_POWER = 0.774  # Model Equality Testing: median power at about 10 samples per prompt
Table = dict[str, dict[str, float | None]]


@dataclass
class Figures:
    """Per fault and intensity: medians over the seeds (None when more than half missed)."""

    forced: Table = field(default_factory=dict)
    requests: Table = field(default_factory=dict)
    detected: dict[str, dict[str, float]] = field(default_factory=dict)
    scorer: Table = field(default_factory=dict)
    greedy: Table = field(default_factory=dict)
    mmd: Table = field(default_factory=dict)
    met_power: Table = field(default_factory=dict)


def print_anchors(figures: Figures, prompts: int) -> list[dict[str, float | str | None]]:
    """The forced test's tokens against Token-DiFR's (goal: within 2x, without a reference)."""
    out: list[dict[str, float | str | None]] = []
    for fault, intensity, tokens, source in ANCHORS:
        ours = figures.forced[fault][intensity]
        ratio = None if ours is None else ours / tokens
        out.append(
            {"fault": fault, "intensity": intensity, "anchor_tokens": tokens, "tokens": ours, "ratio": ratio}
        )
        verdict = "-" if ratio is None else ("within 2x" if ratio <= 2.0 else "NOT within 2x")
        print(
            f"anchor {fault} {intensity}: {show(ours)} tokens against {tokens:,} ({source}): "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}, {verdict}"
        )
    power = figures.met_power.get("quantize", {})
    out.append({"fault": "mmd_power_at_10_samples", "anchor": MET_POWER, "quantize_1": power.get("1")})
    print(
        f"anchor MMD power at 10 samples per prompt (alpha {MET_ALPHA}, {prompts} prompts): "
        f"Model Equality Testing {MET_POWER:.1%}; here quantize 1: {share(power.get('1'))}"
    )
    return out


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
