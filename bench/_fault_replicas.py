"""Replica faults with real processes: ``canary serve`` replicas killed or frozen mid-flight.

:class:`ReplicaFleet` runs several ``canary serve`` processes on one PostgreSQL against a loopback
upstream (:class:`CountingUpstream`, in this process) that holds every request a moment and
records, per cell, when each request came and how many were open at once, so "probed again" and
"probed by two replicas at once" are read off what the upstream saw. ``tests/faults`` asserts on
it; :func:`dead_replica_takeover_s` and :func:`hung_leader_takeover_s` are the figures
``bench/faults.py`` prints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import canary_command  # noqa: E402
from tests.loopback import ThreadedServer  # noqa: E402

PROBES = """[[probe]]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"
scorers = ["unexpected_script"]
"""


class CountingUpstream:
    """An OpenAI-compatible chat server; the ``model`` of a request is its cell's pool name."""

    def __init__(self, hold_s: float = 0.2) -> None:
        self.hold_s = hold_s
        self.open: dict[str, int] = {}
        self.most_open: dict[str, int] = {}  # the most requests one cell had open at once
        self.started: dict[str, list[float]] = {}  # time.monotonic() of each request, per cell
        self.overlaps: list[tuple[str, float]] = []  # (cell, when) a second request came while one was open
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> JSONResponse:
        model = (await request.json())["model"]
        self.started.setdefault(model, []).append(time.monotonic())
        self.open[model] = self.open.get(model, 0) + 1
        self.most_open[model] = max(self.most_open.get(model, 0), self.open[model])
        if self.open[model] > 1:
            self.overlaps.append((model, time.monotonic()))
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self.open[model] -= 1
        message = {"role": "assistant", "content": "Paris is the capital of France."}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7},
            }
        )

    def first_after(self, cell: str, t: float) -> float | None:
        return next((s for s in self.started.get(cell, []) if s > t), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One ``canary serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    id: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the replica's ``/metrics`` (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@dataclass
class ReplicaFleet:
    """``replicas`` processes of ``canary serve`` over ``cells`` cells; use :func:`replica_fleet`."""

    db_url: str
    workdir: Path
    upstream: CountingUpstream
    replicas: list[Replica] = field(default_factory=list)

    def sql(self, query: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                return list(conn.execute(sa.text(query), params).all())
        finally:
            engine.dispose()

    def claims(self) -> dict[str, set[str]]:
        """Replica id -> cells it holds an unexpired claim on."""
        out: dict[str, set[str]] = {}
        for cell, rid in self.sql(
            "SELECT cell, replica_id FROM cell_claims WHERE expires_at > clock_timestamp()"
        ):
            out.setdefault(str(rid), set()).add(str(cell))
        return out

    def leader(self) -> Replica | None:
        rows = self.sql("SELECT holder FROM leader_lease WHERE deadline > clock_timestamp()")
        holder = rows[0][0] if rows else None
        return next((r for r in self.replicas if r.id == holder), None)

    def by_id(self, rid: str) -> Replica:
        return next(r for r in self.replicas if r.id == rid)


def wait_for(check: object, what: str, limit_s: float = 60.0, poll_s: float = 0.05) -> float:
    """Poll ``check()`` until true; returns the time.monotonic() it first was."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return time.monotonic()
        except (httpx.HTTPError, sa.exc.OperationalError):
            pass
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting until {what}")


def write_config(
    workdir: Path, upstream_url: str, cells: int, port: int, heartbeat_s: float, lease_s: float
) -> Path:
    (workdir / "probes").mkdir(exist_ok=True)
    (workdir / "probes" / "basic.toml").write_text(PROBES)
    text = (
        'probes_dir = "probes"\n[defaults]\ninterval_s = 1\njitter_s = 0\n'
        f"[service]\nport = {port}\nheartbeat_s = {heartbeat_s}\nleader_lease_s = {lease_s}\n"
        "shutdown_grace_s = 1\nrefresh_s = 1\n[service.schedule]\nstart_spread_s = 1\n"
        "[detection]\ninterval_s = 0.5\n"
    )
    for i in range(cells):
        text += (
            f'[[targets]]\nmodel = "m"\nplatform = "p"\npool = "c{i:02d}"\nprovider = "openai-chat"\n'
            f'base_url = "{upstream_url}/v1"\nmodel_id = "c{i:02d}"\ntimeout_s = 5\n'
        )
    path = workdir / f"canary-{port}.toml"
    path.write_text(text)
    return path


# Replica ids are random, so rendezvous hashing gives one of two replicas every cell with chance
# 2 / 2**cells (1 in 8 at 4 cells), and a fleet started to share its cells would not; at 16 cells
# that is 3 in 100,000.
CELLS = 16


@contextmanager
def replica_fleet(
    db_url: str, replicas: int = 2, cells: int = CELLS, heartbeat_s: float = 1.0, lease_s: float = 2.0
) -> Iterator[ReplicaFleet]:
    """Start the upstream and ``replicas`` ``canary serve`` processes; wait until every one is
    ready and every cell is claimed; SIGKILL whatever is left on exit."""
    upstream = CountingUpstream()
    server = ThreadedServer(upstream.app).start()
    with tempfile.TemporaryDirectory(prefix="canary-replicas-") as tmp:
        fleet = ReplicaFleet(db_url, Path(tmp), upstream)
        env = {**os.environ, "DATABASE_URL": db_url}
        try:
            for _ in range(replicas):
                port = free_port()
                config = write_config(fleet.workdir, server.url, cells, port, heartbeat_s, lease_s)
                log = fleet.workdir / f"replica-{port}.log"
                cmd = canary_command("serve", "--config", str(config), "--log-level", "WARNING")
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        cmd, env=env, cwd=fleet.workdir, stdout=out, stderr=subprocess.STDOUT
                    )
                fleet.replicas.append(Replica(proc, port, log))
            for r in fleet.replicas:
                wait_for(lambda r=r: _ready(r), f"replica on {r.port} is ready", 120)
                r.id = httpx.get(f"{r.base}/readyz", timeout=10).json()["replica"]["id"]
            wait_for(
                lambda: (
                    sum(len(c) for c in fleet.claims().values()) == cells and len(fleet.claims()) == replicas
                ),
                "every cell is claimed and every replica has some",
            )
            yield fleet
        except BaseException:
            for r in fleet.replicas:  # what each replica said, for whoever reads the failure
                print(f"--- replica {r.id or r.port} (exit {r.proc.poll()}):\n{r.log.read_text()[-3000:]}")
            raise
        finally:
            for r in fleet.replicas:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGCONT)
                    r.proc.kill()
                r.proc.wait(timeout=30)
            server.stop()


def _ready(r: Replica) -> bool:
    if r.proc.poll() is not None:
        raise RuntimeError(f"canary serve exited with {r.proc.returncode}: {r.log.read_text()[-2000:]}")
    return httpx.get(f"{r.base}/readyz", timeout=2).status_code == 200


def kill_replica_with_cells(fleet: ReplicaFleet) -> tuple[float, set[str]]:
    """SIGKILL a replica that probes some cells (not the leader); returns when, and its cells."""
    leader = fleet.leader()
    claims = fleet.claims()
    victim = next(r for r in fleet.replicas if r is not leader and claims.get(r.id))
    cells = claims[victim.id]
    victim.proc.kill()
    killed = time.monotonic()
    victim.proc.wait(timeout=10)
    return killed, cells


def takeover_s(fleet: ReplicaFleet, cells: set[str], since: float, limit_s: float = 60.0) -> float:
    """Seconds from ``since`` until the upstream has seen a request for every one of ``cells``."""
    pools = {c.rsplit("/", 1)[1] for c in cells}
    done = wait_for(lambda: all(fleet.upstream.first_after(p, since) for p in pools), "cells probed", limit_s)
    del done
    return max(fleet.upstream.first_after(p, since) or 0.0 for p in pools) - since


@dataclass(frozen=True)
class Freeze:
    """A SIGSTOPped leader: when, and how long until the others took over."""

    leader: Replica
    at: float  # time.monotonic() of the SIGSTOP
    lease_moved_s: float  # until another replica held the lease
    duties_resumed_s: float  # until another replica completed a detection round


def freeze_leader(fleet: ReplicaFleet) -> Freeze:
    """SIGSTOP the leader and wait until another replica holds the lease and has run detection."""
    leader = fleet.leader()
    assert leader is not None, "no replica leads"
    steps = {r.id: detection_steps(r) for r in fleet.replicas if r is not leader}
    leader.proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    moved = wait_for(lambda: fleet.leader() not in (None, leader), "another replica holds the lease", 60)

    def resumed() -> bool:
        new = fleet.leader()
        return new not in (None, leader) and detection_steps(new) > steps.get(new.id, 0.0)  # type: ignore[union-attr]

    done = wait_for(resumed, "another replica runs detection", 60)
    return Freeze(leader, frozen, moved - frozen, done - frozen)


def detection_steps(r: Replica) -> float:
    return r.metric("canary_singleton_steps_total", 'duty="detection"')


def dead_replica_takeover_s() -> float:
    """Two replicas, 16 cells probed every second, heartbeat 1 s: SIGKILL one, time until the
    survivor's first request to each of its cells (the last of them)."""
    with _database() as url, replica_fleet(url, replicas=2, heartbeat_s=1.0) as fleet:
        time.sleep(2.0)
        killed, cells = kill_replica_with_cells(fleet)
        return takeover_s(fleet, cells, killed)


def hung_leader_takeover_s() -> float:
    """Two replicas, lease 2 s: SIGSTOP the leader, time until another completes a detection round."""
    with _database() as url, replica_fleet(url, replicas=2, lease_s=2.0) as fleet:
        wait_for(lambda: fleet.leader() is not None, "a replica leads")
        time.sleep(1.0)
        freeze = freeze_leader(fleet)
        freeze.leader.proc.send_signal(signal.SIGCONT)
        return freeze.duties_resumed_s


@contextmanager
def _database() -> Iterator[str]:
    """A private embedded PostgreSQL with the canary schema, for the benchmark."""
    from canary.storage.engine import ensure_database, migrate, sqlalchemy_url, start_embedded, with_database

    with tempfile.TemporaryDirectory(prefix="canary-bench-pg-") as tmp:
        server_url, server = start_embedded(Path(tmp) / "pg")
        try:
            ensure_database(server_url, "canary")
            url = sqlalchemy_url(with_database(server_url, "canary"))
            migrate(url)
            yield url
        finally:
            server.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    print(f"dead replica takeover: {dead_replica_takeover_s():.2f} s")
    print(f"hung leader takeover: {hung_leader_takeover_s():.2f} s")
