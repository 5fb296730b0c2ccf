"""The equivalence probes as scheduled probes: runs stored like any other, read back by detection.

``canary compare`` sends the equivalence catalog (:mod:`canary.probing.equivalence`) once and
keeps nothing. Scheduled, each of its tests becomes a probe set of ordinary catalog probes, run
by the same :class:`~canary.probing.runner.PassRunner` and stored in ``runs`` (the echoed
tokens and their log-probabilities in ``token_logprobs``, compressed; the text in
``output_text``), so detection (:mod:`canary.detection.equivalence`) reads what a statistic
needs from the database:

- ``equivalence.forced``: the probe's text (prompt + continuation) with ``echo`` and
  ``logprobs``, one generated token: the continuation's prompt log-probabilities;
- ``equivalence.greedy``: the prompt at temperature 0 (chat, as ``canary compare`` sends it);
- ``equivalence.sampled``: the prompt ``samples`` times at its temperature.

A cell runs the sets its target's ``equivalence`` tests name, every ``equivalence_interval_s``
of ``[service.schedule]`` (unset: not scheduled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from canary.config.loader import Target
from canary.config.sections import ScheduleSpec
from canary.probing.catalog import Probe, ProbeSpec, content_version, render_prompts
from canary.probing.completion import Message, Mode, ProbeRequest
from canary.probing.equivalence import EquivalenceCatalog, default_equivalence_dir, load_equivalence

SETS = {"forced": "equivalence.forced", "greedy": "equivalence.greedy", "sampled": "equivalence.sampled"}
MAX_REPEAT = 64  # ProbeSpec's bound on repeats: a sampled probe's samples per pass


@dataclass(frozen=True, slots=True)
class EquivalenceProbe(Probe):
    """A catalog probe built from an equivalence probe; ``test`` says how it is sent."""

    test: str = "greedy"

    def request(
        self, mode: Mode, *, session_key: str | None = None, history: Sequence[tuple[Probe, str]] = ()
    ) -> ProbeRequest:
        s = self.spec
        if self.test == "forced":
            # spec.completion_prompt is the whole text, prompt and continuation, scored by echo.
            text = s.completion_prompt or s.prompt
            return ProbeRequest(
                mode="completion", prompt=text, max_tokens=1, echo=True, session_key=session_key
            )
        return ProbeRequest(
            mode="chat",
            messages=(Message("user", s.prompt),),
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            session_key=session_key,
        )


def _built(spec: ProbeSpec, test: str) -> EquivalenceProbe:
    prompts = render_prompts(spec)
    version = content_version(spec, prompts)
    return EquivalenceProbe(spec, SETS[test], version, "equivalence", prompts, test=test)


def scheduled_probes(catalog: EquivalenceCatalog) -> list[EquivalenceProbe]:
    """Every equivalence probe as a catalog probe, in the probe set of its test.

    A forced probe's ``prompt`` is its prompt and ``reference_answer`` its continuation, so the
    stored spec says which tokens of the echo are scored.
    """
    out: list[EquivalenceProbe] = []
    for p in catalog.forced:
        spec = ProbeSpec(
            id=p.id, prompt=p.prompt, completion_prompt=p.text, reference_answer=p.continuation,
            scorers=("answered",), max_tokens=1, tags=p.tags,
        )  # fmt: skip
        out.append(_built(spec, "forced"))
    for g in catalog.greedy:
        spec = ProbeSpec(
            id=g.id, prompt=g.prompt, reference_answer=g.reference_answer, scorers=("answered",),
            max_tokens=g.max_tokens, tags=g.tags,
        )  # fmt: skip
        out.append(_built(spec, "greedy"))
    for s in catalog.sampled:
        spec = ProbeSpec(
            id=s.id, prompt=s.prompt, reference_answer=s.reference_answer, scorers=("answered",),
            max_tokens=s.max_tokens, temperature=s.temperature, repeat=min(s.samples, MAX_REPEAT),
            tags=s.tags,
        )  # fmt: skip
        out.append(_built(spec, "sampled"))
    return out


def probes_for(target: Target, probes: Sequence[Probe]) -> list[Probe]:
    """The equivalence probes among ``probes`` that ``target`` runs: those of its tests."""
    sets = {SETS[test] for test in target.spec.equivalence_tests()}
    return [p for p in probes if p.probe_set in sets]


def load_scheduled(probes_dir: str | Path | None, spec: ScheduleSpec) -> list[EquivalenceProbe]:
    """The scheduled equivalence probes (none when ``equivalence_interval_s`` is unset).

    Raises :class:`~canary.errors.ConfigError` for a bad probe file, at start-up.
    """
    if spec.equivalence_interval_s is None:
        return []
    directory = default_equivalence_dir() if probes_dir is None else Path(probes_dir) / "equivalence"
    return scheduled_probes(load_equivalence(directory))
