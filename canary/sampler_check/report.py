"""The result of one sampler check: a pure value, stored as one row and printed by the CLI.

No JAX and no I/O here, so storage and the API can read reports without the accelerator stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from canary.sampler_check.reference import INVARIANTS


@dataclass(frozen=True)
class Reproducer:
    """The smallest swept input on which one invariant failed.

    The logits row is ``canary.sampler_check.inputs.make_row(kind, vocab, seed, dtype)`` (or
    ``chi_square_row(vocab, seed, dtype)`` when ``kind == "chi_square"``), placed at ``row`` of a
    batch of ``batch`` rows; ``top_logits`` lists its largest entries for reading at a glance.
    """

    invariant: str
    dtype: str
    vocab: int
    batch: int
    row: int
    top_k: int
    temperature: float
    top_p: float
    kind: str
    seed: int
    detail: str
    top_logits: list[tuple[int, float]] = field(default_factory=list)

    def size(self) -> tuple[int, int]:
        """Order reproducers by how small they are to rerun."""
        return (self.vocab * self.batch, self.batch)


@dataclass
class SamplerCheckReport:
    """Everything one ``canary sampler-check`` run found.

    ``violations`` counts violating rows (or failed chi-square tests) per invariant and
    ``checked`` how many were examined, so a zero count is known to be a real zero.
    """

    sampler: str
    device: str
    jax_version: str
    jaxlib_version: str
    config: dict[str, Any]
    violations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    checked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    reproducers: dict[str, Reproducer] = field(default_factory=dict)
    duration_s: float = 0.0
    returns_kept: bool = True

    @property
    def passed(self) -> bool:
        """True when no invariant was violated."""
        return not any(self.violations.values())

    def record(self, invariant: str, checked: int, violated: int, reproducer: Reproducer | None) -> None:
        """Add a batch's counts for one invariant, keeping the smallest reproducer seen."""
        self.checked[invariant] += checked
        self.violations[invariant] += violated
        best = self.reproducers.get(invariant)
        if reproducer is not None and (best is None or reproducer.size() < best.size()):
            self.reproducers[invariant] = reproducer

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the storage row's columns are its top-level keys."""
        return {
            "sampler": self.sampler,
            "device": self.device,
            "jax_version": self.jax_version,
            "jaxlib_version": self.jaxlib_version,
            "config": self.config,
            "violations": dict(self.violations),
            "checked": dict(self.checked),
            "reproducers": {k: asdict(v) for k, v in self.reproducers.items()},
            "returns_kept": self.returns_kept,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
        }

    def to_json(self) -> str:
        """Serialise as one line of JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    def summary_lines(self) -> list[str]:
        """Human-readable verdict: one line per invariant, then each failure's reproducer."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [
            f"{verdict} {self.sampler} on {self.device} (jax {self.jax_version}) in {self.duration_s:.1f}s"
        ]
        for name in INVARIANTS:
            if self.checked[name] == 0:
                lines.append(f"  {name:<17} not checked")
            else:
                lines.append(
                    f"  {name:<17} {self.violations[name]} violations / {self.checked[name]} checked"
                )
        for name, rep in self.reproducers.items():
            lines.append(f"{name} violated: {rep.detail}")
            row = (
                f"chi_square_row({rep.vocab}, {rep.seed}, {rep.dtype!r})"
                if rep.kind == "chi_square"
                else f"make_row({rep.kind!r}, {rep.vocab}, {rep.seed}, {rep.dtype!r})"
            )
            lines.append(
                f"  minimal input: dtype={rep.dtype} vocab={rep.vocab} batch={rep.batch} row={rep.row} "
                f"top_k={rep.top_k} temperature={rep.temperature} top_p={rep.top_p} "
                f"logits=canary.sampler_check.inputs.{row}"
            )
            if rep.top_logits:
                top = ", ".join(f"{i}:{v:.9g}" for i, v in rep.top_logits)
                lines.append(f"  largest logits (index:value): {top}")
        return lines
