"""A PostgreSQL stopped with ``pg_ctl`` under a probing ``canary serve`` loses no result.

A real ``canary serve`` process probes a loopback upstream (which records every request) on a
private embedded PostgreSQL; the test stops the server, lets the service probe through the
outage, starts the server again and stops the service. Every request the upstream answered must
then be stored exactly once, every pass whole; the backlog shows in ``/metrics`` and ``/readyz``
meanwhile. Past ``outage_buffer_s`` the oldest passes are dropped whole, counted and logged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.database import StoppableDatabase
from tests.faults.misbehaving import ONE_PROBE, REPEAT
from tests.loopback import serve_in_thread
from tests.upstream import ScriptedUpstream

CELLS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_for(check: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


@dataclass
class Outage:
    """What the service showed while the database was down."""

    backlog_runs: float = 0.0
    spooled_bytes: float = 0.0
    readyz: list[tuple[int, dict[str, object]]] = field(default_factory=list)


@contextmanager
def probing_service(
    tmp_path: Path, db: StoppableDatabase, service: str
) -> Iterator[tuple[str, ScriptedUpstream]]:
    """``canary serve`` on ``CELLS`` cells probed every second; yields its URL and the upstream."""
    upstream = ScriptedUpstream()
    with serve_in_thread(upstream.app) as server:
        (tmp_path / "probes").mkdir()
        (tmp_path / "probes" / "one.toml").write_text(ONE_PROBE)
        port = free_port()
        text = (
            'probes_dir = "probes"\n[defaults]\ninterval_s = 1\njitter_s = 0\n'
            f'[service]\nport = {port}\nspool_dir = "{tmp_path / "spool"}"\nshutdown_grace_s = 10\n'
            f"{service}\n"
            "[service.schedule]\nstart_spread_s = 1\npass_timeout_s = 30\n"  # no pass cut short
        )
        for i in range(CELLS):
            text += (
                f'[[targets]]\nmodel = "m"\nplatform = "p"\npool = "pool-{i}"\nprovider = "openai-chat"\n'
                f'base_url = "{server.url}/v1"\nmodel_id = "ok"\ntimeout_s = 5\n'
            )
        (tmp_path / "canary.toml").write_text(text)
        env = {**os.environ, "DATABASE_URL": db.url}
        with open(tmp_path / "serve.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "canary", "serve", "--config", str(tmp_path / "canary.toml")],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            try:
                yield f"http://127.0.0.1:{port}", upstream
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def every_cell_stored(db: StoppableDatabase) -> Callable[[], bool]:
    def check() -> bool:
        engine = sa.create_engine(db.url)
        try:
            with engine.connect() as conn:
                return conn.scalar(sa.text("SELECT count(DISTINCT target_id) FROM runs")) == CELLS
        finally:
            engine.dispose()

    return check


def through_outage(url: str, db: StoppableDatabase, seconds: float) -> Outage:
    """Stop the database for ``seconds`` while watching ``/metrics`` and ``/readyz``; start it again."""
    seen = Outage()
    db.stop()
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        seen.backlog_runs = max(seen.backlog_runs, metric(text, "canary_result_backlog_runs"))
        seen.spooled_bytes = max(seen.spooled_bytes, metric(text, "canary_result_backlog_spooled_bytes"))
        ready = httpx.get(f"{url}/readyz", timeout=10)
        seen.readyz.append((ready.status_code, ready.json()))
        time.sleep(0.5)
    db.start()
    return seen


def stored_runs(db: StoppableDatabase) -> list[tuple[str, int, int, int]]:
    engine = sa.create_engine(db.url)
    with engine.connect() as conn:
        query = "SELECT pass_id::text, target_id, probe_pk, repeat_index FROM runs"
        rows = [tuple(r) for r in conn.execute(sa.text(query)).all()]
        failed = conn.execute(sa.text("SELECT reason, error FROM runs WHERE status <> 'ok'")).all()
        assert not failed, failed
    engine.dispose()
    return rows  # type: ignore[return-value]


def assert_whole_passes(rows: list[tuple[str, int, int, int]]) -> None:
    assert len(set(rows)) == len(rows), "a run was stored twice"
    sizes: dict[str, int] = {}
    for pass_id, *_ in rows:
        sizes[pass_id] = sizes.get(pass_id, 0) + 1
    assert set(sizes.values()) == {REPEAT}, f"half-written passes: {sorted(sizes.values())[:5]}"


@pytest.fixture
def db() -> Iterator[StoppableDatabase]:
    # Not under tmp_path: the server runs as another user, and pytest's directories are private.
    root = Path(tempfile.mkdtemp(prefix="canary-outage-pg-"))
    database = StoppableDatabase(root)
    yield database
    database.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def test_a_database_outage_loses_no_result_and_writes_each_once_in_whole_passes(
    tmp_path: Path, db: StoppableDatabase
) -> None:
    with probing_service(tmp_path, db, "outage_memory_runs = 12") as (url, upstream):
        wait_for(every_cell_stored(db), "every cell probed once")
        seen = through_outage(url, db, seconds=5)
        wait_for(
            lambda: metric(httpx.get(f"{url}/metrics").text, "canary_result_backlog_runs") == 0, "drained"
        )
        after = httpx.get(f"{url}/readyz").json()
        dropped = metric(httpx.get(f"{url}/metrics").text, "canary_result_backlog_dropped_runs_total")
    rows = stored_runs(db)
    assert len(rows) == len(upstream.requests), "every answered request is stored"
    assert_whole_passes(rows)
    assert seen.backlog_runs >= CELLS * REPEAT * 2 and seen.spooled_bytes > 0  # memory, then the file
    assert dropped == 0
    assert all(code == 503 for code, _ in seen.readyz)
    assert any(body["backlog"]["runs"] > 0 for _, body in seen.readyz)  # type: ignore[index]
    assert after["status"] == "ready" and after["backlog"]["runs"] == 0


def test_past_the_bound_whole_passes_are_dropped_counted_and_logged(
    tmp_path: Path, db: StoppableDatabase
) -> None:
    with probing_service(tmp_path, db, "outage_buffer_s = 1.5") as (url, upstream):
        wait_for(every_cell_stored(db), "every cell probed once")
        through_outage(url, db, seconds=5)
        wait_for(
            lambda: metric(httpx.get(f"{url}/metrics").text, "canary_result_backlog_runs") == 0, "drained"
        )
        dropped = metric(
            httpx.get(f"{url}/metrics").text, "canary_result_backlog_dropped_runs_total", reason="expired"
        )
    rows = stored_runs(db)
    assert dropped > 0 and dropped % REPEAT == 0
    assert len(rows) + dropped == len(upstream.requests), "every answered request is stored or counted"
    assert_whole_passes(rows)
    logged = re.findall(r"dropped (\d+) results \(expired\)", (tmp_path / "serve.log").read_text())
    assert logged and sum(int(n) for n in logged) == dropped
