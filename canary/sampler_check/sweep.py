"""Run a sampler over the sweep grid on the default JAX device and check every invariant.

Imports JAX; only ``canary sampler-check`` (inside its body), the tests and the bench use it.

Per case (one compiled shape), :func:`run_sweep`:

1. builds a batch of adversarial rows, each with its own temperature and top-p, cycling through
   every (kind, temperature, top-p) combination from an offset that moves with the case;
2. calls the jit-compiled sampler and checks the row-level invariants against the float64
   reference;
3. for batches of more than one row, calls it again on the batch rolled by one row, and on
   every row in batches of another size (1, or 7 for large batches), and requires the same
   greedy tokens and kept sets;
4. on the chi-square shape, draws each test distribution ``draws`` times and runs a
   goodness-of-fit test at a Bonferroni share of the family-wise α.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from canary.sampler_check.grid import SweepCase, SweepGrid
from canary.sampler_check.inputs import KINDS, chi_square_row, make_row
from canary.sampler_check.reference import (
    ReferenceBatch,
    chi_square_test,
    kept_sets_differ,
    reference_batch,
    reference_distribution,
    row_violations,
)
from canary.sampler_check.report import Reproducer, SamplerCheckReport
from canary.sampler_check.samplers import Sampler

Outputs = tuple[np.ndarray, np.ndarray | None]


class SamplerContractError(Exception):
    """The sampler broke the contract of :class:`canary.sampler_check.samplers.Sampler`."""


def device_name() -> str:
    """The default JAX device as ``platform:kind``, e.g. ``gpu:NVIDIA H100 80GB HBM3``."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


class _Runner:
    """A jit-compiled sampler with contract checks on its outputs."""

    def __init__(self, sampler: Sampler) -> None:
        self.fn = jax.jit(sampler, static_argnames=("top_k",))
        self.returns_kept: bool | None = None

    def __call__(
        self,
        logits: np.ndarray,
        dtype: str,
        key: jax.Array,
        temps: np.ndarray,
        top_ps: np.ndarray,
        top_k: int,
    ) -> Outputs:
        x = jnp.asarray(logits, dtype=jnp.float32)
        if dtype == "bf16":
            x = x.astype(jnp.bfloat16)  # exact: rows already hold bf16 values
        out = self.fn(x, key, jnp.asarray(temps, jnp.float32), jnp.asarray(top_ps, jnp.float32), top_k=top_k)
        tokens, kept = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        tokens_np = np.asarray(tokens)
        batch, vocab = logits.shape
        if tokens_np.shape != (batch,) or not np.issubdtype(tokens_np.dtype, np.integer):
            raise SamplerContractError(
                f"tokens must be int [{batch}], got {tokens_np.dtype} {tokens_np.shape}"
            )
        kept_np = None if kept is None else np.asarray(kept)
        if kept_np is not None and (kept_np.shape != (batch, vocab) or kept_np.dtype != np.bool_):
            raise SamplerContractError(
                f"kept must be bool [{batch}, {vocab}], got {kept_np.dtype} {kept_np.shape}"
            )
        self.returns_kept = kept_np is not None
        return tokens_np, kept_np


def _row_seed(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def _top_logits(row: np.ndarray, n: int = 8) -> list[tuple[int, float]]:
    idx = np.argsort(-row.astype(np.float64), kind="stable")[:n]
    return [(int(i), float(row[i])) for i in idx]


def _detail(
    invariant: str, row: np.ndarray, token: int, kept: np.ndarray | None, top_p: float, in_top_k: bool
) -> str:
    x = row.astype(np.float64)
    best = int(np.argmax(x))
    if invariant == "greedy_argmax":
        return (
            f"temperature 0 returned token {token} (logit {x[token]:.9g}), argmax is {best} ({x[best]:.9g})"
        )
    if invariant == "argmax_kept" and kept is not None:
        dropped = np.flatnonzero((x == x.max()) & ~kept)[:4].tolist()
        return f"most probable token(s) {dropped} dropped while {int(kept.sum())} token(s) were kept"
    if invariant == "top_p_mass":
        return f"kept set of {0 if kept is None else int(kept.sum())} tokens does not reach top_p={top_p}"
    if not 0 <= token < x.size:
        return f"sampled token id {token} is outside the vocabulary of {x.size}"
    where = (
        "the sampler's own kept set"
        if kept is not None and not kept[token]
        else ("the exact top-k set" if not in_top_k else "the support (zero reference probability)")
    )
    return f"sampled token {token} (logit {x[token]:.9g}) is outside {where}"


class _Sweep:
    """State of one run: the runner, the report being filled, and the input cycle."""

    def __init__(self, sampler: Sampler, grid: SweepGrid, seed: int, report: SamplerCheckReport) -> None:
        self.run = _Runner(sampler)
        self.grid = grid
        self.seed = seed
        self.report = report
        self.combos = list(itertools.product(KINDS, grid.temperatures, grid.top_ps))
        plan = grid.chi_square
        n_chi = sum(1 for c in grid.cases if (c.vocab, c.batch) == (plan.vocab, plan.batch))
        self.chi_alpha = plan.alpha / max(1, n_chi * len(plan.settings))

    def case(self, index: int, case: SweepCase) -> None:
        offset = (index * 37) % len(self.combos)  # small batches cover different combinations
        specs = [self.combos[(offset + r) % len(self.combos)] for r in range(case.batch)]
        seeds = [_row_seed(self.seed, index, r) for r in range(case.batch)]
        logits = np.stack(
            [make_row(k, case.vocab, s, case.dtype) for (k, _, _), s in zip(specs, seeds, strict=True)]
        )
        temps = np.array([t for _, t, _ in specs], np.float32)
        top_ps = np.array([p for _, _, p in specs], np.float32)
        key = jax.random.fold_in(jax.random.key(self.seed), index)
        tokens, kept = self.run(logits, case.dtype, key, temps, top_ps, case.top_k)

        def reproducer(inv: str, r: int, detail: str) -> Reproducer:
            kind, t, p = specs[r]
            return Reproducer(
                inv,
                case.dtype,
                case.vocab,
                case.batch,
                r,
                case.top_k,
                t,
                p,
                kind,
                seeds[r],
                detail,
                _top_logits(logits[r]),
            )

        ref = reference_batch(logits, temps, case.top_k)
        for inv, bad in row_violations(ref, tokens, kept, temps, top_ps).items():
            scope = temps <= 0 if inv == "greedy_argmax" else temps > 0
            if inv == "top_p_mass":
                scope = scope & (top_ps < 1.0)
            rep = None
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                tok = int(tokens[r])
                in_top_k = bool(0 <= tok < case.vocab and ref.in_top_k[r, tok])
                rep = reproducer(
                    inv,
                    r,
                    _detail(inv, logits[r], tok, None if kept is None else kept[r], specs[r][2], in_top_k),
                )
            self.report.record(inv, int(scope.sum()), int(bad.sum()), rep)

        if case.batch > 1:
            self._batch_invariance(case, logits, ref, temps, top_ps, key, tokens, kept, reproducer)
        plan = self.grid.chi_square
        if (case.vocab, case.batch) == (plan.vocab, plan.batch):
            self._chi_square(index, case, key)

    def _batch_invariance(
        self,
        case: SweepCase,
        logits: np.ndarray,
        ref: ReferenceBatch,
        temps: np.ndarray,
        top_ps: np.ndarray,
        key: jax.Array,
        tokens: np.ndarray,
        kept: np.ndarray | None,
        reproducer: Callable[[str, int, str], Reproducer],
    ) -> None:
        greedy = temps <= 0
        # Position: the same rows shifted by one place must give the same deterministic outputs.
        r_tokens, r_kept = self.run(
            np.roll(logits, 1, 0), case.dtype, key, np.roll(temps, 1), np.roll(top_ps, 1), case.top_k
        )
        r_tokens = np.roll(r_tokens, -1)
        bad = greedy & (r_tokens != tokens)
        if kept is not None and r_kept is not None:
            bad |= kept_sets_differ(logits, ref, np.roll(r_kept, -1, 0), kept, top_ps)
        rep = None
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            rep = reproducer(
                "batch_invariance",
                r,
                f"row {r} changes its greedy token or kept set when moved one "
                f"position in a batch of {case.batch}",
            )
        self.report.record("batch_invariance", case.batch, int(bad.sum()), rep)
        # Size: every row, re-run in batches of another size, must give what it gave in this one.
        # Batch 1 for small batches; batches of 7 (odd, and a size of the default grid, so
        # usually compiled already) for large ones, the last padded by repeating rows.
        chunk = 1 if case.batch <= 8 else 7
        bad = np.zeros(case.batch, bool)
        for start in range(0, case.batch, chunk):
            idx = np.minimum(np.arange(start, start + chunk), case.batch - 1)
            c_tokens, c_kept = self.run(logits[idx], case.dtype, key, temps[idx], top_ps[idx], case.top_k)
            bad[idx] |= greedy[idx] & (c_tokens != tokens[idx])
            if kept is not None and c_kept is not None:
                sub = ReferenceBatch(ref.is_max[idx], ref.in_top_k[idx], ref.probs[idx])
                bad[idx] |= kept_sets_differ(logits[idx], sub, c_kept, kept[idx], top_ps[idx])
        rep = None
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            detail = (
                f"row {r} gives a different greedy token or kept set in a batch of {chunk} "
                f"than in a batch of {case.batch}"
            )
            rep = reproducer("batch_invariance", r, detail)
        self.report.record("batch_invariance", case.batch, int(bad.sum()), rep)

    def _chi_square(self, index: int, case: SweepCase, key: jax.Array) -> None:
        plan = self.grid.chi_square
        n_dist = len(plan.settings)
        copies = case.batch // n_dist
        rows = [
            chi_square_row(case.vocab, _row_seed(self.seed, 1 << 20, index, i), case.dtype)
            for i in range(n_dist)
        ]
        logits = np.repeat(np.stack(rows), copies, axis=0)
        temps = np.repeat(np.array([t for t, _ in plan.settings], np.float32), copies)
        top_ps = np.repeat(np.array([p for _, p in plan.settings], np.float32), copies)
        counts = np.zeros((n_dist, case.vocab), np.int64)
        calls = -(-plan.draws // copies)
        for c in range(calls):
            tokens, _ = self.run(
                logits, case.dtype, jax.random.fold_in(key, 1_000 + c), temps, top_ps, case.top_k
            )
            for i in range(n_dist):
                drawn = np.clip(
                    tokens[i * copies : (i + 1) * copies], 0, case.vocab - 1
                )  # range is token_kept's job
                counts[i] += np.bincount(drawn, minlength=case.vocab)
        for i, (t, p) in enumerate(plan.settings):
            expected = reference_distribution(rows[i], t, p, case.top_k)
            result = chi_square_test(counts[i], expected)
            bad = result.p_value < self.chi_alpha
            rep = None
            if bad:
                detail = (
                    f"sampled frequencies differ from the reference: chi2={result.statistic:.1f}, "
                    f"dof={result.dof}, p={result.p_value:.2e} < alpha={self.chi_alpha:.1e} "
                    f"({int(counts[i].sum())} draws, {result.outside_support} outside the support)"
                )
                rep = Reproducer(
                    "chi_square",
                    case.dtype,
                    case.vocab,
                    case.batch,
                    i * copies,
                    case.top_k,
                    t,
                    p,
                    "chi_square",
                    _row_seed(self.seed, 1 << 20, index, i),
                    detail,
                    _top_logits(rows[i]),
                )
            self.report.record("chi_square", 1, int(bad), rep)


def run_sweep(
    sampler: Sampler,
    sampler_path: str,
    grid: SweepGrid,
    *,
    seed: int = 0,
    on_case: Callable[[SweepCase], None] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> SamplerCheckReport:
    """Check ``sampler`` over ``grid`` and return the report (see the module docstring)."""
    started = time.perf_counter()
    config = {
        **grid.describe(),
        "seed": seed,
        "x64": bool(jax.config.read("jax_enable_x64")),  # type: ignore[no-untyped-call]
        **(extra_config or {}),
    }
    report = SamplerCheckReport(
        sampler=sampler_path,
        device=device_name(),
        jax_version=jax.__version__,
        jaxlib_version=str(getattr(jaxlib, "__version__", "unknown")),
        config=config,
    )
    sweep = _Sweep(sampler, grid, seed, report)
    for index, case in enumerate(grid.cases):
        sweep.case(index, case)
        if on_case is not None:
            on_case(case)
    report.returns_kept = bool(sweep.run.returns_kept)
    report.duration_s = time.perf_counter() - started
    return report
