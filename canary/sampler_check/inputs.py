"""Adversarial logits rows for the sampler check (NumPy only; no JAX).

Every row is a pure function of ``(kind, vocab, seed)`` so that a violation's reproducer can
name it in three values. Rows are built in fp32; for the bf16 configuration they are rounded
to bf16 values (round to nearest even) while still held as fp32, which is exact and keeps the
slow bf16 code paths of a CPU backend out of input preparation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Row = np.ndarray
F32 = np.float32


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round fp32 values to the nearest bf16 value (ties to even), returned as fp32."""
    bits = np.ascontiguousarray(x, dtype=F32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) & np.uint32(0xFFFF0000)).view(F32)


def _normal(vocab: int, rng: np.random.Generator, scale: float = 2.0) -> Row:
    return (rng.standard_normal(vocab) * scale).astype(F32)


def _peaked(vocab: int, rng: np.random.Generator) -> Row:
    x = _normal(vocab, rng, 1.0)
    x[rng.integers(vocab)] += F32(25.0)
    return x


def _flat(vocab: int, rng: np.random.Generator) -> Row:
    return _normal(vocab, rng, 1e-3)


def _uniform(vocab: int, rng: np.random.Generator) -> Row:
    # Every token tied at the max: any answer is an argmax, and top-k/top-p must keep ties whole.
    return np.zeros(vocab, dtype=F32)


def _tie_at_max(vocab: int, rng: np.random.Generator) -> Row:
    x = _normal(vocab, rng, 1.0)
    ties = rng.choice(vocab, size=min(vocab, int(rng.integers(2, 5))), replace=False)
    x[ties] = x.max() + F32(1.0)
    return x


def _near_tie(vocab: int, rng: np.random.Generator) -> Row:
    # The max beats the runner-up by one fp32 ulp, so only an exact comparison orders them.
    x = _normal(vocab, rng, 1.0)
    first, second = rng.choice(vocab, size=2, replace=False)
    x[first] = x.max() + F32(0.5)
    x[second] = np.nextafter(x[first], F32(np.inf))
    return x


def _bf16_collide(vocab: int, rng: np.random.Generator) -> Row:
    # Two fp32 values equal after bf16 rounding; the larger sits at the higher index, so a bf16
    # argmax (first index wins ties) picks the wrong one.
    x = _normal(vocab, rng, 1.0)
    low, high = np.sort(rng.choice(vocab, size=2, replace=False))
    base = F32(8.0)
    x[low] = base
    x[high] = np.nextafter(np.nextafter(base, F32(np.inf)), F32(np.inf))
    return x


def _masked(vocab: int, rng: np.random.Generator) -> Row:
    # Huge negative masks, as servers apply for banned tokens or grammar constraints.
    fill = [F32(-1e30), F32(-np.inf), np.finfo(F32).min][int(rng.integers(3))]
    x = np.full(vocab, fill, dtype=F32)
    live = rng.choice(vocab, size=min(vocab, int(rng.integers(1, 9))), replace=False)
    x[live] = _normal(len(live), rng, 1.0)
    return x


def _argmax_first(vocab: int, rng: np.random.Generator) -> Row:
    x = _normal(vocab, rng, 1.0)
    x[0] = x.max() + F32(3.0)
    return x


def _argmax_last(vocab: int, rng: np.random.Generator) -> Row:
    # The last index is the last lane of a tile whenever vocab is a multiple of the tile width.
    x = _normal(vocab, rng, 1.0)
    x[-1] = x.max() + F32(3.0)
    return x


def _large_offset(vocab: int, rng: np.random.Generator) -> Row:
    # Large logits leave few bits for the differences: precision loss, ties after bf16 rounding.
    return (_normal(vocab, rng, 1.0) + F32(1e4)).astype(F32)


KINDS: dict[str, Callable[[int, np.random.Generator], Row]] = {
    "normal": _normal,
    "peaked": _peaked,
    "flat": _flat,
    "uniform": _uniform,
    "tie_at_max": _tie_at_max,
    "near_tie": _near_tie,
    "bf16_collide": _bf16_collide,
    "masked": _masked,
    "argmax_first": _argmax_first,
    "argmax_last": _argmax_last,
    "large_offset": _large_offset,
}


def make_row(kind: str, vocab: int, seed: int, dtype: str) -> Row:
    """Build one adversarial row: fp32 values, rounded to bf16 values when ``dtype == "bf16"``."""
    row = KINDS[kind](vocab, np.random.default_rng(seed))
    return round_to_bf16(row) if dtype == "bf16" else row


def chi_square_row(vocab: int, seed: int, dtype: str) -> Row:
    """A smooth, tie-free row for frequency tests (top-p boundaries are far from rounding)."""
    row = _normal(vocab, np.random.default_rng(seed), 1.5)
    return round_to_bf16(row) if dtype == "bf16" else row
