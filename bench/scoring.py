"""Scoring throughput: the full scorer set over the catalog's reference answers and corrupted variants.

Prints outputs scored per second on one core, for the full set (``score_completion``: ``answered``
plus each probe's own scorers) and per scorer (over the outputs whose probe lists it), with the
machine it ran on. The last line is one JSON object: ``outputs_per_s`` and ``<scorer>_per_s``.

Corrupted variants mirror the postmortem's failure classes: Thai and Han characters mid-answer,
broken code, wrong digits, truncation, a divergent temperature-0 answer, a dropped top token
in the logprobs, and a response served by the wrong pool (routing). The run is pinned to one CPU
where the OS allows it.

    .venv/bin/python bench/scoring.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from canary.probing.catalog import Probe, load_catalog
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring import SCORERS, Scorer, ScoringContext, score_completion

CELL_SCORERS = {"answered", "routing"}


@dataclass(frozen=True)
class Output:
    probe: Probe
    completion: Completion
    context: ScoringContext
    corrupted: bool


def tokens_for(text: str, drop_top_at: int | None = None) -> list[TokenLogprob]:
    """A greedy decode of ``text`` in 4-character tokens; optionally one step not the argmax."""
    out = []
    for index, start in enumerate(range(0, len(text), 4)):
        piece = text[start : start + 4]
        top = ((piece, -0.05), ("<alt>", -3.5), ("<alt2>", -6.0))
        if index == drop_top_at:
            top = (("<top>", -0.05), (piece, -3.5), ("<alt2>", -6.0))
            out.append(TokenLogprob(piece, -3.5, top))
        else:
            out.append(TokenLogprob(piece, -0.05, top))
    return out


def corruptions(text: str) -> list[str]:
    """Broken variants of a healthy answer."""
    middle = len(text) // 2
    variants = [
        text[:middle] + " สวัสดี " + text[middle:],  # Thai mid-sentence
        text[:middle] + "数字" + text[middle:],  # Han inside the answer (or a code comment)
        text[: max(1, len(text) * 2 // 3)],  # truncated: unclosed code, partial answer
        text.replace("(", "((", 1).replace("}", "", 1).replace("2", "7"),  # code breakers, wrong digits
    ]
    return [v for v in variants if v != text]


def build_outputs(probes: list[Probe]) -> list[Output]:
    outputs = []
    for probe in probes:
        reference = probe.spec.reference_answer
        # Every cell here names its expected pool; corrupted answers also come from the wrong one.
        context = ScoringContext(reference, expected_pool="short-context", served_pool="short-context")
        misrouted = ScoringContext(reference, expected_pool="short-context", served_pool="long-context")
        with_logprobs = probe.spec.logprobs
        healthy = Completion(ok=True, text=reference, tokens=tokens_for(reference) if with_logprobs else None)
        outputs.append(Output(probe, healthy, context, corrupted=False))
        for variant in corruptions(reference):
            tokens = tokens_for(variant, drop_top_at=1) if with_logprobs else None
            outputs.append(
                Output(probe, Completion(ok=True, text=variant, tokens=tokens), misrouted, corrupted=True)
            )
    return outputs


def scorer_work(scorer: Scorer, outputs: list[Output]) -> Callable[[], int]:
    def work() -> int:
        for o in outputs:
            scorer.score(o.probe, o.completion, o.context)
        return len(outputs)

    return work


def rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second of ``work`` (which returns how many it did), repeated for ``seconds``."""
    work()  # warm caches (compiled patterns, parsers) as a long-running service would have them
    done = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        done += work()
        elapsed = time.perf_counter() - start
    return done / elapsed


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_to_one_cpu() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure")
    args = parser.parse_args()

    pinned = pin_to_one_cpu()
    probes = list(load_catalog().probes)
    outputs = build_outputs(probes)
    corrupted = sum(o.corrupted for o in outputs)

    def full() -> int:
        for o in outputs:
            score_completion(o.probe, o.completion, o.context)
        return len(outputs)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {pinned}")
    print(f"python:  {platform.python_implementation()} {platform.python_version()} on {sys.platform}")
    print(
        f"outputs: {len(outputs)} ({len(outputs) - corrupted} reference answers, {corrupted} corrupted) "
        f"from {len(probes)} probes"
    )
    figures: dict[str, float] = {"outputs_per_s": rate(full, args.seconds)}
    print(f"{'full set':<22} {figures['outputs_per_s']:>12,.0f} outputs/s on one core")

    failures: dict[str, int] = {}
    for name, scorer in SCORERS.items():
        # answered and routing apply to every run; the others to the probes that list them
        applicable = [o for o in outputs if name in CELL_SCORERS or name in o.probe.spec.scorers]

        figures[f"{name}_per_s"] = rate(scorer_work(scorer, applicable), args.seconds / 2)
        failures[name] = sum(
            not s.passed for o in applicable for s in scorer.score(o.probe, o.completion, o.context)
        )
        print(
            f"{name:<22} {figures[f'{name}_per_s']:>12,.0f} outputs/s   "
            f"({len(applicable)} outputs, {failures[name]} failing)"
        )

    healthy_failures = [
        (o.probe.id, s.metric)
        for o in outputs
        if not o.corrupted
        for s in score_completion(o.probe, o.completion, o.context)
        if not s.passed
    ]
    print(f"reference answers failing a scorer: {len(healthy_failures)} {healthy_failures[:5]}")
    summary = {
        **{k: round(v, 1) for k, v in figures.items()},
        "outputs": len(outputs),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
