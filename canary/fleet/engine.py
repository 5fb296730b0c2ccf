"""Continuous batching: every live request of a replica is decoded together, one step at a time.

The HTTP handlers :meth:`BatchEngine.submit` a :class:`GenerationRequest` and await the
future. One worker thread loops: it takes in new requests, groups the live ones by replica
(and by the static top-k the compiled sampler needs), builds each group's logits, pads the
batch to a power-of-two bucket so JAX compiles once per bucket, and makes one sampler call per
group per step. Requests arriving together therefore share batches, so batch size is real —
which is what the ``topk_drop`` fault depends on.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from canary.fleet.model import AnswerPlan, RowFaults, SyntheticModel
from canary.fleet.sampler import fleet_step
from canary.fleet.vocab import Vocabulary


@dataclass
class GenerationRequest:
    """Everything the engine needs for one request; ``logprobs`` < 0 means none are returned."""

    model: SyntheticModel
    plan: AnswerPlan
    replica: str
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    logprobs: int = -1
    stop: tuple[str, ...] = ()
    dtype: str = "bf16"
    faults: RowFaults = field(default_factory=RowFaults)


@dataclass(frozen=True)
class TokenInfo:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass
class Generation:
    text: str
    tokens: list[str]
    logprobs: list[TokenInfo] | None
    finish_reason: str  # "stop" or "length"
    batch_sizes: list[int]  # the batch size at each step, for tests and debugging
    prompt_logprobs: list[TokenInfo | None] | None = None  # echo: the prompt's tokens, scored


def token_info(vocab: Vocabulary, token: int, logits: np.ndarray, n: int) -> TokenInfo:
    """The token's log-probability under ``logits`` and the ``n`` most probable alternatives."""
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max()).sum()) + z.max()
    k = max(n, 1)
    top = np.argpartition(-z, k)[:k]
    top = top[np.argsort(-z[top], kind="stable")]
    tokens = vocab.tokens
    alternatives = tuple((tokens[j], float(z[j] - lse)) for j in top[:n])
    return TokenInfo(tokens[token], float(z[token] - lse), alternatives)


@dataclass
class _Row:
    request: GenerationRequest
    future: Future[Generation]
    pos: int = 0
    tokens: list[str] = field(default_factory=list)
    infos: list[TokenInfo] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    done: bool = False


def bucket(n: int) -> int:
    """The power of two at or above ``n``: the padded batch shape that gets compiled."""
    return 1 << max(0, (n - 1).bit_length())


class BatchEngine:
    """The decoding loop of the whole fleet, on one worker thread."""

    def __init__(self, vocab: Vocabulary, max_batch: int = 64) -> None:
        self.vocab = vocab
        self.max_batch = bucket(max_batch)
        self._inbox: queue.Queue[_Row | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="fleet-engine", daemon=True)
        self._seeds = itertools.count(1)
        self._stopping = False
        self.steps = 0
        self.tokens_generated = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout=10)

    def submit(self, request: GenerationRequest) -> Future[Generation]:
        future: Future[Generation] = Future()
        if self._stopping:
            future.set_exception(RuntimeError("the fleet is shutting down"))
        else:
            self._inbox.put(_Row(request, future))
        return future

    def warm_up(self, top_k: int = 0) -> None:
        """Compile the sampler for every bucket now rather than on the first requests."""
        size = len(self.vocab)
        b = 1
        while b <= self.max_batch:
            zeros = np.zeros(b, dtype=np.float32)
            for temperature in (0.0, 1.0):
                fleet_step(
                    np.zeros((b, size), np.float32),
                    np.uint32(0),
                    zeros + temperature,
                    zeros + 1,
                    zeros,
                    top_k=top_k,
                ).block_until_ready()
            b *= 2

    def _loop(self) -> None:
        live: list[_Row] = []
        while True:
            arrivals = self._intake(block=not live)
            if self._stopping or None in arrivals:
                for row in [*live, *(a for a in arrivals if a is not None)]:
                    if not row.future.done():
                        row.future.set_exception(RuntimeError("the fleet is shutting down"))
                return
            live.extend(a for a in arrivals if a is not None)
            groups: dict[tuple[str, int, str], list[_Row]] = defaultdict(list)
            for row in live:
                r = row.request
                groups[(r.replica, r.top_k, r.dtype)].append(row)
            for (_, top_k, dtype), rows in groups.items():
                for start in range(0, len(rows), self.max_batch):
                    chunk = rows[start : start + self.max_batch]
                    try:
                        self._step(chunk, top_k, dtype)
                    except Exception as exc:  # a bug must fail its requests, not hang them
                        for row in chunk:
                            row.done = True
                            row.future.set_exception(exc)
            live = [row for row in live if not row.done]

    def _intake(self, block: bool) -> list[_Row | None]:
        """New requests; waits for the first one only when nothing is being decoded."""
        items: list[_Row | None] = []
        try:
            items.append(self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait())
            while True:
                items.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        return items

    def _step(self, rows: list[_Row], top_k: int, dtype: str) -> None:
        n = len(rows)
        padded = bucket(n)
        logits = np.zeros((padded, len(self.vocab)), dtype=np.float32)
        temperature = np.zeros(padded, dtype=np.float32)
        top_p = np.ones(padded, dtype=np.float32)
        drop = np.zeros(padded, dtype=np.float32)
        for i, row in enumerate(rows):
            r = row.request
            r.model.logits(r.plan, row.pos, len(row.tokens), r.faults, logits[i])
            temperature[i] = r.temperature
            top_p[i] = r.top_p
            if r.faults.drop_rate and (not r.faults.drop_batch_sizes or n in r.faults.drop_batch_sizes):
                drop[i] = r.faults.drop_rate
        if dtype == "bf16":
            # A bf16 pool: the model's logits carry bf16 precision; selection still runs in fp32.
            logits = logits.astype(ml_dtypes.bfloat16).astype(np.float32)
        seed = np.uint32(next(self._seeds) & 0xFFFFFFFF)
        chosen = np.asarray(fleet_step(logits, seed, temperature, top_p, drop, top_k=top_k))
        self.steps += 1
        for i, row in enumerate(rows):
            self._advance(row, int(chosen[i]), logits[i], n)

    def _advance(self, row: _Row, token: int, logits: np.ndarray, batch_size: int) -> None:
        r = row.request
        row.batch_sizes.append(batch_size)
        if r.logprobs >= 0 and token != self.vocab.eos:
            row.infos.append(token_info(self.vocab, token, logits, r.logprobs))
        if token == self.vocab.eos:
            return self._finish(row, "stop")
        text = self.vocab.tokens[token]
        row.tokens.append(text)
        self.tokens_generated += 1
        if not r.model.is_inserted(r.plan, token):
            row.pos += 1
        if r.stop:
            joined = "".join(row.tokens)
            if any(s in joined for s in r.stop):
                return self._finish(row, "stop")
        if len(row.tokens) >= r.max_tokens:
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        row.done = True
        text = "".join(row.tokens)
        for s in row.request.stop:
            if s and s in text:
                text = text[: text.index(s)]
        infos = row.infos if row.request.logprobs >= 0 else None
        row.future.set_result(Generation(text, row.tokens, infos, reason, row.batch_sizes))
