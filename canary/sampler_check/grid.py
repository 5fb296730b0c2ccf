"""The configuration grid the sampler check sweeps (no JAX).

Each :class:`SweepCase` is one compiled shape (dtype, vocabulary, batch size, static top-k);
temperatures and top-p values vary per row inside a case, so they cost no compilation. The
default grid keeps 256k vocabularies to a few batch sizes so that a sweep stays under a minute
on two CPU cores; ``full`` is the exhaustive grid for accelerators and nightly runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DTYPES: tuple[str, ...] = ("fp32", "bf16")
TEMPERATURES: tuple[float, ...] = (0.0, 0.25, 0.7, 1.0, 1.5)
TOP_PS: tuple[float, ...] = (1.0, 0.9, 0.99, 0.999)
# Family-wise false-alarm rate of all chi-square tests of one run (Bonferroni-split).
CHI_SQUARE_ALPHA = 1e-3


@dataclass(frozen=True)
class SweepCase:
    """One compiled configuration."""

    dtype: str
    vocab: int
    batch: int
    top_k: int


@dataclass(frozen=True)
class ChiSquarePlan:
    """Frequency tests: ``rows`` distinct distributions, each drawn ``draws`` times.

    Runs on every case whose shape is ``(batch, vocab)``; rows are replicated across the batch
    and the sampler is called ``draws * rows // batch`` times with fresh keys.
    """

    vocab: int = 1024
    batch: int = 512
    settings: tuple[tuple[float, float], ...] = ((1.0, 1.0), (0.7, 0.9), (1.5, 0.99), (1.0, 0.999))
    draws: int = 1024
    alpha: float = CHI_SQUARE_ALPHA


@dataclass(frozen=True)
class SweepGrid:
    """The cases of one run plus the per-row temperature / top-p values and the chi-square plan."""

    cases: tuple[SweepCase, ...]
    temperatures: tuple[float, ...] = TEMPERATURES
    top_ps: tuple[float, ...] = TOP_PS
    chi_square: ChiSquarePlan = field(default_factory=ChiSquarePlan)
    name: str = "custom"

    def describe(self) -> dict[str, Any]:
        """The grid as stored with the report: compact, but enough to rebuild every case."""
        shapes: dict[str, list[int]] = {}
        for case in self.cases:
            shapes.setdefault(str(case.vocab), [])
            if case.batch not in shapes[str(case.vocab)]:
                shapes[str(case.vocab)].append(case.batch)
        return {
            "grid": self.name,
            "dtypes": sorted({c.dtype for c in self.cases}),
            "top_ks": sorted({c.top_k for c in self.cases}),
            "batches_by_vocab": shapes,
            "temperatures": list(self.temperatures),
            "top_ps": list(self.top_ps),
            "chi_square": asdict(self.chi_square),
            "cases": len(self.cases),
        }


def product_cases(
    dtypes: tuple[str, ...], shapes: dict[int, tuple[int, ...]], top_ks: tuple[int, ...]
) -> tuple[SweepCase, ...]:
    """Every (dtype, vocab, batch, top_k) of the given shapes, smallest shapes first."""
    return tuple(
        SweepCase(dtype, vocab, batch, k)
        for vocab in sorted(shapes)
        for batch in sorted(shapes[vocab])
        for dtype in dtypes
        for k in top_ks
    )


def default_grid() -> SweepGrid:
    """Under a minute on 2 CPU cores: every batch-size class at 1k vocab, a few at 32k and 256k."""
    shapes = {1024: (1, 7, 8, 64, 512), 32000: (16,), 256000: (1, 8)}
    return SweepGrid(cases=product_cases(DTYPES, shapes, (0, 1, 50)), name="default")


def full_grid() -> SweepGrid:
    """The exhaustive grid: batch sizes 1 … 512 at vocabularies up to 256k, more top-k values."""
    batches = (1, 2, 3, 7, 8, 16, 31, 64, 128, 256, 512)
    shapes = {1024: batches, 32000: batches, 128256: (1, 8, 64, 128), 256000: (1, 2, 8, 16, 64, 128)}
    return SweepGrid(cases=product_cases(DTYPES, shapes, (0, 1, 2, 40, 50, 64, 1000)), name="full")


def small_grid() -> SweepGrid:
    """Seconds, not a minute (``--quick``, and the tests): every defect class still shows.

    Batch 1 and a multiple of 8, top-k on and off, both dtypes, and the chi-square shape.
    """
    cases = (
        *product_cases(("fp32",), {256: (1, 8), 1024: (64,)}, (0, 50)),
        SweepCase("bf16", 256, 8, 50),
        SweepCase("bf16", 1024, 64, 0),
    )
    plan = ChiSquarePlan(vocab=1024, batch=64, draws=512)
    return SweepGrid(cases=cases, chi_square=plan, name="quick")
