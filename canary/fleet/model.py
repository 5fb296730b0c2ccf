"""Synthetic models: a reference answer per prompt, and logits that favour it.

The :class:`AnswerBook` matches an incoming prompt to a catalog probe by exact text (the chat
prompt, the completion prompt, or the prompt followed by a blank line as the completion
provider sends it, or a completion-style session transcript ending with one) and falls back to
a generic answer for anything else.

At each step a :class:`SyntheticModel` builds logits in which the reference token leads by a
margin, a handful of plausible alternatives of the same kind (other words, other Han
characters…) follow, and a background tail of ordinary tokens carries the rest of the mass.
Everything that defines a healthy answer (margins, alternatives) depends only on the model,
the answer and the position, so temperature-0 answers are identical on every pool. Faults
change a row's logits through :class:`RowFaults`, decided once per request from the request's
own random generator, so whether a request is hit does not depend on its batch neighbours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from canary.fleet.config import ModelSpec
from canary.fleet.perturb import Perturbation
from canary.fleet.vocab import Vocabulary, script_class
from canary.probing.catalog import Catalog, Probe
from canary.probing.equivalence import EquivalenceCatalog

GENERIC_ANSWERS = (
    "Here is a short answer: it depends on the details, but the usual approach is to start simple, "
    "check the result, and then refine it.",
    "I am not certain, but the most common explanation is the simplest one, and it is worth "
    "checking that first.",
    "In short: yes, in most cases, although there are exceptions that depend on the context.",
)
ALTERNATIVES = 5
_TAIL_MARGIN = (6.0, 10.0)  # reference above the whole background tail
_OPEN_GAP = (1.5, 3.0)  # filler words: where a healthy model hesitates between "the" and "a"
_FIRM_GAP = (5.0, 9.0)


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Answer:
    """What a prompt should be answered with, and which probe (if any) asked it."""

    key: str
    text: str
    probe: Probe | None
    long_context: bool = False
    code: bool = False
    allowed_scripts: tuple[str, ...] = ("Latin",)


class AnswerBook:
    """Prompt text -> :class:`Answer`, built once from the catalog at fleet start-up."""

    def __init__(self, catalog: Catalog | None, equivalence: EquivalenceCatalog | None = None) -> None:
        self.by_prompt: dict[str, Answer] = {}
        # Teacher-forced texts (prompt + fixed continuation) -> the continuation and where it starts.
        self.forced: dict[str, tuple[Answer, int]] = {}
        for probe in catalog.probes if catalog else ():
            s = probe.spec
            answer = Answer(
                key=probe.id,
                text=s.reference_answer,
                probe=probe,
                long_context="long_context_recall" in s.scorers,
                code=s.code_language is not None,
                allowed_scripts=s.allowed_scripts,
            )
            # The rendered prompts (haystack included for needle probes) are what providers send.
            chat = getattr(probe, "prompt", s.prompt)
            completion = getattr(probe, "completion_prompt", s.completion_prompt or f"{s.prompt}\n\n")
            for prompt in (chat, f"{chat}\n\n", s.prompt):
                self.by_prompt.setdefault(prompt, answer)
            if s.completion_prompt and not s.reference_answer[:1].isspace():
                # A base model continues "Q: …\nA:" with a space before the answer.
                answer = replace(answer, key=f"{probe.id}#completion", text=f" {s.reference_answer}")
            self.by_prompt.setdefault(completion, answer)
        self._add_equivalence(equivalence or EquivalenceCatalog())

    def _add_equivalence(self, equivalence: EquivalenceCatalog) -> None:
        for forced in equivalence.forced:
            answer = Answer(key=forced.id, text=forced.continuation, probe=None, code="code" in forced.tags)
            self.forced[forced.text] = (answer, len(forced.prompt))
        asked = [(p.id, p.prompt, p.reference_answer) for p in equivalence.greedy]
        asked += [(p.id, p.prompt, p.reference_answer) for p in equivalence.sampled]
        for key, prompt, text in asked:
            answer = Answer(key=key, text=text, probe=None)
            for sent in (prompt, f"{prompt}\n\n"):
                self.by_prompt.setdefault(sent, answer)

    def texts(self) -> list[str]:
        forced = [a.text for a, _ in self.forced.values()]
        return [a.text for a in self.by_prompt.values()] + forced + list(GENERIC_ANSWERS)

    def lookup(self, prompt: str) -> Answer:
        found = self.by_prompt.get(prompt) or self.by_prompt.get(prompt.strip()) or self._transcript(prompt)
        if found is not None:
            return found
        index = _seed(prompt) % len(GENERIC_ANSWERS)
        return Answer(key=f"generic-{index}", text=GENERIC_ANSWERS[index], probe=None)

    def _transcript(self, prompt: str) -> Answer | None:
        """The answer to the last turn of a completion-style session transcript, if it is one.

        A base model is sent a session as earlier turns and answers, each followed by a blank
        line, then the current turn's prompt: the longest known prompt after a blank line is it.
        """
        at = prompt.find("\n\n")
        while at != -1:
            found = self.by_prompt.get(prompt[at + 2 :])
            if found is not None:
                return found
            at = prompt.find("\n\n", at + 1)
        return None


@dataclass(frozen=True)
class AnswerPlan:
    """Per-position reference ids, margins and alternatives for one (model, answer)."""

    ref: np.ndarray  # [L] ids, the last one EOS
    margin: np.ndarray  # [L]
    alts: np.ndarray  # [L, ALTERNATIVES]
    alt_gap: np.ndarray  # [L, ALTERNATIVES] how far below the reference each alternative is
    corrupt_pool: np.ndarray  # ids the corrupt fault may push up for this answer
    long_context: bool  # a needle probe: misrouting loses the needle more often
    content: np.ndarray  # positions of words and digits (not spaces or punctuation)
    seed: int = 0  # fixes a subtle fault's perturbation for this context


@dataclass
class RowFaults:
    """How faults touch one request; all zero for a healthy request."""

    degrade: float = 0.0  # misrouted onto a pool configured for another context window
    confused_steps: frozenset[int] = frozenset()  # steps where a degraded request loses its way
    corrupt_steps: frozenset[int] = frozenset()
    drop_rate: float = 0.0  # topk_drop: chance per step that the argmax is dropped
    drop_batch_sizes: tuple[int, ...] = ()
    perturb: Perturbation | None = None  # quantize, kv_quant, context_config
    rng: np.random.Generator = field(default_factory=np.random.default_rng)


class SyntheticModel:
    """One model name: a background tail of its own and cached answer plans."""

    def __init__(self, spec: ModelSpec, vocab: Vocabulary) -> None:
        self.spec = spec
        self.vocab = vocab
        rng = np.random.default_rng(_seed("background", spec.name, spec.seed))
        background = rng.normal(0.0, 1.0, len(vocab)).astype(np.float32)
        # Rare-script and code-breaking tokens sit far below everything: a healthy model
        # essentially never emits them, which is what makes their appearance a signal.
        self.background = np.where(vocab.tail_mask, background, np.float32(-40.0)).astype(np.float32)
        self.tail_lse = float(np.log(np.exp(self.background.astype(np.float64)).sum()))
        self._plans: dict[str, AnswerPlan] = {}

    def plan(self, answer: Answer) -> AnswerPlan:
        cached = self._plans.get(answer.key)
        if cached is None:
            cached = self._plans[answer.key] = self._make_plan(answer)
        return cached

    def _make_plan(self, answer: Answer) -> AnswerPlan:
        v = self.vocab
        plan_seed = _seed("plan", self.spec.name, self.spec.seed, answer.key)
        rng = np.random.default_rng(plan_seed)
        ref = np.array([*v.encode(answer.text), v.eos], dtype=np.int32)
        filler = set(v.filler.tolist())
        margin = np.empty(len(ref), dtype=np.float32)
        gap_base = np.empty(len(ref), dtype=np.float32)
        alts = np.empty((len(ref), ALTERNATIVES), dtype=np.int32)
        for i, token in enumerate(ref.tolist()):
            is_filler = token in filler
            margin[i] = rng.uniform(*_TAIL_MARGIN) / self.spec.entropy
            low, high = _OPEN_GAP if is_filler else _FIRM_GAP
            gap_base[i] = rng.uniform(low, high) / self.spec.entropy
            pool = v.filler if is_filler else v.by_class.get(script_class(v.tokens[token]), v.filler)
            pool = pool[pool != token]
            if len(pool) == 0:
                pool = v.filler
            alts[i] = rng.choice(pool, ALTERNATIVES, replace=len(pool) < ALTERNATIVES)
        gap = rng.uniform(0.0, 1.5, alts.shape).astype(np.float32) + gap_base[:, None]
        if answer.code:
            corrupt = v.code_breakers
        else:
            scripts = [s for s in ("Thai", "Han", "Hangul") if s not in answer.allowed_scripts]
            corrupt = np.concatenate([v.rare_by_script[s] for s in scripts[:2] or ["Thai"]])
        kinds = [script_class(v.tokens[t]) for t in ref[:-1].tolist()]
        content = np.array([i for i, k in enumerate(kinds) if k not in ("space", "punct")], dtype=np.int32)
        return AnswerPlan(ref, margin, alts, gap, corrupt, answer.long_context, content, plan_seed)

    def logits(self, plan: AnswerPlan, pos: int, step: int, faults: RowFaults, out: np.ndarray) -> None:
        """Write the logits for one row at answer position ``pos`` (decoding step ``step``) into ``out``.

        1. Start from the model's background tail.
        2. Put the reference token ``margin`` above the tail's log-sum-exp and the
           alternatives a little below the reference.
        3. A misrouted request (``degrade`` > 0) has smaller margins (more entropy), and at its
           confused steps an alternative overtakes the reference: wrong words, wrong answers,
           lost needles.
        4. At a corrupt step a rare-script or code-breaking token overtakes everything.
        5. A subtle fault (:mod:`canary.fleet.perturb`) adds its fixed noise to every logit.
        """
        i = min(pos, len(plan.ref) - 1)
        out[:] = self.background
        margin = plan.margin[i]
        gaps = plan.alt_gap[i]
        if faults.degrade > 0.0:
            shrink = 1.0 - 0.6 * faults.degrade
            margin, gaps = margin * shrink, gaps * shrink
        if faults.perturb is not None:
            shrink = faults.perturb.shrink(pos)
            margin, gaps = margin * shrink, gaps * shrink
        top = self.tail_lse + margin
        out[plan.alts[i]] = top - gaps
        out[plan.ref[i]] = top
        if step in faults.confused_steps:
            out[plan.alts[i][int(faults.rng.integers(ALTERNATIVES))]] = top + faults.rng.uniform(0.2, 1.5)
        if step in faults.corrupt_steps:
            token = plan.corrupt_pool[int(faults.rng.integers(len(plan.corrupt_pool)))]
            out[token] = top + faults.rng.uniform(1.0, 3.0)
        if faults.perturb is not None:
            out += faults.perturb.noise(plan.seed, pos, len(out))

    def teacher_forced(self, plan: AnswerPlan, faults: RowFaults) -> np.ndarray:
        """The logits at every position of the answer, the answer itself as the context: ``[L, vocab]``.

        What :meth:`logits` gives row by row with ``step = pos`` (a test holds them equal), in
        one pass of array operations: scoring a text is one forward pass, not a decode loop.
        Rows with a confused or corrupt step are redone by :meth:`logits` in order, so the
        request's random draws are the same.
        """
        length = len(plan.ref) - 1
        out = np.repeat(self.background[None, :], length, axis=0)
        margin, gaps = plan.margin[:length], plan.alt_gap[:length]
        if faults.degrade > 0.0:
            shrink = 1.0 - 0.6 * faults.degrade
            margin, gaps = margin * shrink, gaps * shrink
        perturb = faults.perturb
        if perturb is not None:
            factor = np.array([perturb.shrink(j) for j in range(length)], dtype=np.float32)
            margin, gaps = margin * factor, gaps * factor[:, None]
        top = self.tail_lse + margin
        rows = np.arange(length)
        out[rows[:, None], plan.alts[:length]] = top[:, None] - gaps
        out[rows, plan.ref[:length]] = top
        if perturb is not None:
            out += np.stack([perturb.noise(plan.seed, j, out.shape[1]) for j in range(length)])
        for j in sorted((faults.confused_steps | faults.corrupt_steps) & set(range(length))):
            self.logits(plan, j, j, faults, out[j])
        return out

    def is_inserted(self, plan: AnswerPlan, token: int) -> bool:
        """Corrupt tokens are insertions: the answer resumes where it was."""
        return bool(np.any(plan.corrupt_pool == token))
