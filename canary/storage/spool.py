"""The result backlog's file: batches of runs that waited too long in memory for PostgreSQL.

One JSON line per batch (``{"queued_at": <unix s>, "runs": [...]}``), appended in order and read
from an offset that a sidecar file (``<name>.offset``) keeps across restarts, so a replica
restarted during an outage resumes where it stopped. Writing a batch again after a crash is
harmless: the backlog skips runs already stored (:func:`canary.storage.backlog.unstored`).

The file is named after the database (``results-<hash of its URL>.jsonl``): spooled runs carry
that database's cell and probe ids, so they must never be replayed into another one. Each
replica holds an exclusive ``flock`` on its file; a second replica on the same machine, directory
and database takes the next free name (``results-<hash>-1.jsonl``...), so two never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from canary.errors import FailureReason
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring.base import Score
from canary.storage.writes import RunResult

MAX_SPOOL_FILES = 64


@dataclass
class Batch:
    """Runs of one pass that are stored together, and when they joined the backlog (unix s)."""

    runs: list[RunResult]
    queued_at: float

    @property
    def pass_id(self) -> uuid.UUID:
        return self.runs[0].pass_id


def run_to_json(r: RunResult) -> dict[str, Any]:
    c = r.completion
    return {
        "pass_id": str(r.pass_id),
        "target_id": r.target_id,
        "probe_pk": r.probe_pk,
        "started_at": r.started_at.isoformat(),
        "repeat_index": r.repeat_index,
        "session_key": r.session_key,
        "deploy_id": r.deploy_id,
        "served_pool": r.served_pool,
        "establishes_reference": r.establishes_reference,
        "scores": [[s.metric, s.passed, s.value, s.detail] for s in r.scores],
        "completion": {
            "ok": c.ok,
            "text": c.text,
            "reason": c.reason.value if c.reason else None,
            "error": c.error,
            "http_status": c.http_status,
            "latency_s": c.latency_s,
            "served_by": c.served_by,
            "tokens": None if c.tokens is None else [[t.token, t.logprob, t.top] for t in c.tokens],
            "finish_reason": c.finish_reason,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "retry_after_s": c.retry_after_s,
            "response_model": c.response_model,
        },
    }


def run_from_json(d: dict[str, Any]) -> RunResult:
    c = dict(d["completion"])
    c["reason"] = FailureReason(c["reason"]) if c["reason"] else None
    if c["tokens"] is not None:
        c["tokens"] = [TokenLogprob(t, lp, tuple((a, b) for a, b in top)) for t, lp, top in c["tokens"]]
    return RunResult(
        pass_id=uuid.UUID(d["pass_id"]),
        target_id=d["target_id"],
        probe_pk=d["probe_pk"],
        started_at=datetime.fromisoformat(d["started_at"]),
        completion=Completion(**c),
        scores=[Score(m, p, v, detail) for m, p, v, detail in d["scores"]],
        repeat_index=d["repeat_index"],
        session_key=d["session_key"],
        deploy_id=d["deploy_id"],
        served_pool=d["served_pool"],
        establishes_reference=d["establishes_reference"],
    )


def encode(batch: Batch) -> bytes:
    line = {"queued_at": batch.queued_at, "runs": [run_to_json(r) for r in batch.runs]}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Batch:
    data = json.loads(line)
    return Batch([run_from_json(r) for r in data["runs"]], float(data["queued_at"]))


class SpoolFile:
    """An append-only file of batches with a durable read offset; one process per file."""

    def __init__(self, directory: Path, database: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(database.encode()).hexdigest()[:12]
        self.path, self.file = self._claim(directory, f"results-{key}")
        self.offset_path = self.path.with_name(self.path.name + ".offset")
        self._head: tuple[int, Batch] | None = None  # (offset, batch) of the last head read
        try:
            self.read_at = int(self.offset_path.read_text())
        except (OSError, ValueError):
            self.read_at = 0
        self.file.seek(0, os.SEEK_END)
        self.end = self.file.tell()
        if self.read_at > self.end:  # the file was truncated under an old offset
            self.read_at = 0
        self.pending_runs = sum(len(b.runs) for b in self.batches()) if self.end > self.read_at else 0

    @staticmethod
    def _claim(directory: Path, stem: str) -> tuple[Path, IO[bytes]]:
        for i in range(MAX_SPOOL_FILES):
            path = directory / (f"{stem}.jsonl" if i == 0 else f"{stem}-{i}.jsonl")
            file = open(path, "a+b")  # noqa: SIM115 - held open (and locked) for the process's life
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            return path, file
        raise OSError(f"every spool file in {directory} is held by another process")

    @property
    def bytes(self) -> int:
        return self.end - self.read_at

    def append(self, batch: Batch) -> None:
        data = encode(batch)
        self.file.seek(0, os.SEEK_END)
        self.file.write(data)
        self.file.flush()
        self.end += len(data)
        self.pending_runs += len(batch.runs)

    def head(self) -> Batch | None:
        """The oldest unread batch, or None (decoded once per position: scrapes ask often)."""
        if self.read_at >= self.end:
            return None
        if self._head is None or self._head[0] != self.read_at:
            self.file.seek(self.read_at)
            self._head = (self.read_at, decode(self.file.readline()))
        return self._head[1]

    def peek(self, max_runs: int) -> list[Batch]:
        """The oldest batches, up to ``max_runs`` runs (at least one batch while any is left)."""
        batches: list[Batch] = []
        at, runs = self.read_at, 0
        while at < self.end:
            self.file.seek(at)
            line = self.file.readline()
            batch = decode(line)
            if batches and runs + len(batch.runs) > max_runs:
                break
            batches.append(batch)
            at += len(line)
            runs += len(batch.runs)
        return batches

    def pop(self, count: int = 1) -> None:
        """Mark the ``count`` oldest batches done (stored or dropped); an empty file is truncated."""
        self.file.seek(self.read_at)
        for _ in range(count):
            line = self.file.readline()
            self.read_at += len(line)
            self.pending_runs -= len(json.loads(line)["runs"])
        if self.read_at >= self.end:
            self.file.truncate(0)
            self.read_at = self.end = self.pending_runs = 0
            self._head = None
            self.offset_path.unlink(missing_ok=True)
        else:
            tmp = self.offset_path.with_suffix(".tmp")
            tmp.write_text(str(self.read_at))
            tmp.replace(self.offset_path)

    def batches(self) -> list[Batch]:
        self.file.seek(self.read_at)
        return [decode(line) for line in self.file.read(self.end - self.read_at).splitlines() if line]

    def prepend(self, batches: Sequence[Batch]) -> None:
        """Put ``batches`` (older than everything in the file) before the unread ones, atomically."""
        if not batches:
            return
        self.file.seek(self.read_at)
        rest = self.file.read(self.end - self.read_at)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(encode(b) for b in batches) + rest)
        tmp.replace(self.path)  # our lock is on the old inode: take the new one's before going on
        self.file.close()
        self.file = open(self.path, "a+b")  # noqa: SIM115
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.offset_path.unlink(missing_ok=True)
        self.read_at, self.end, self._head = 0, self.file.seek(0, os.SEEK_END), None
        self.pending_runs += sum(len(b.runs) for b in batches)

    def close(self) -> None:
        """Release the file; an empty one is removed (one per database would pile up otherwise)."""
        if self.pending_runs == 0:
            self.path.unlink(missing_ok=True)  # still under our lock
            self.offset_path.unlink(missing_ok=True)
        self.file.close()
