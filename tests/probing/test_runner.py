"""One pass end to end: real loopback upstream, real PostgreSQL, every result stored."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import load_config
from canary.probing.catalog import load_catalog
from canary.probing.runner import run_pass
from tests.loopback import ThreadedServer, serve_in_thread
from tests.upstream import ANSWER, ScriptedUpstream

pytestmark = pytest.mark.anyio

PROBES = """
[defaults]
scorers = ["answered"]

[[probe]]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"

[[probe]]
id = "capital-repeat"
prompt = "Name the capital of France."
reference_answer = "Paris"
repeat = 3
"""

SECRET = "sk-canary-test-SECRET-9f8e7d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cell(pool: str, provider: str, base_url: str, model_id: str) -> str:
    return f"""
[[targets]]
model = "m"
platform = "p"
pool = "{pool}"
provider = "{provider}"
base_url = "{base_url}"
model_id = "{model_id}"
api_key = "env:CANARY_TEST_SECRET"
timeout_s = 5
served_by_headers = ["x-served-pool", "x-served-replica"]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve_in_thread(ScriptedUpstream().app) as server:
        yield server


@pytest.fixture
def half_failing_config(tmp_path: Path, upstream: ThreadedServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four cells: two healthy, one answering 500, one where nothing listens."""
    monkeypatch.setenv("CANARY_TEST_SECRET", SECRET)
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "basic.toml").write_text(PROBES)
    url = upstream.url
    text = 'probes_dir = "probes"\n' + "".join(
        [
            cell("chat", "openai-chat", f"{url}/v1", "ok"),
            cell("messages", "anthropic", url, "ok"),
            cell("broken", "openai-chat", f"{url}/v1", "error500"),
            cell("down", "openai-completions", f"http://127.0.0.1:{free_port()}/v1", "ok"),
        ]
    )
    path = tmp_path / "canary.toml"
    path.write_text(text)
    return path


async def test_a_pass_with_half_the_cells_failing_stores_every_result(
    engine: AsyncEngine, half_failing_config: Path
) -> None:
    config = load_config(half_failing_config)
    catalog = load_catalog(config.probes_dir)
    summary = await run_pass(engine, config.targets, catalog.probes)

    runs_per_cell = 1 + 3
    assert summary.stored == 4 * runs_per_cell
    assert summary.failed_runs == 2 * runs_per_cell
    assert summary.cells["m/p/broken"].failures == {"server_error": 4}
    assert summary.cells["m/p/down"].failures == {"connection_error": 4}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT t.pool, r.status, r.reason, r.http_status, r.served_pool, r.output_text "
                    "FROM runs r JOIN targets t ON t.id = r.target_id"
                )
            )
        ).all()
        assert len(rows) == 16
        by_pool = {
            pool: [r for r in rows if r.pool == pool] for pool in ("chat", "messages", "broken", "down")
        }
        assert all(
            r.status == "ok" and r.output_text == ANSWER for r in by_pool["chat"] + by_pool["messages"]
        )
        assert all(r.served_pool == "short-context" for r in by_pool["chat"])
        assert all(r.reason == "server_error" and r.http_status == 500 for r in by_pool["broken"])
        assert all(r.reason == "connection_error" and r.http_status is None for r in by_pool["down"])
        scores = (await conn.execute(sa.text("SELECT metric, passed FROM scores"))).all()
        assert len(scores) == 8 and all(s.metric == "answered" and s.passed for s in scores)
        references = await conn.scalar(sa.text("SELECT count(*) FROM reference_outputs"))
        assert references == 4  # one per healthy cell and probe
        probes = (await conn.execute(sa.text("SELECT probe_id, version FROM probes ORDER BY probe_id"))).all()
        assert [tuple(p) for p in probes] == [("capital", 1), ("capital-repeat", 1)]


async def test_a_changed_prompt_becomes_a_new_probe_version(
    engine: AsyncEngine, half_failing_config: Path
) -> None:
    config = load_config(half_failing_config)
    await run_pass(engine, config.targets[:1], load_catalog(config.probes_dir).probes)
    probe_file = half_failing_config.parent / "probes" / "basic.toml"
    probe_file.write_text(probe_file.read_text().replace("What is the capital", "Which city is the capital"))
    await run_pass(engine, config.targets[:1], load_catalog(config.probes_dir).probes)
    async with engine.connect() as conn:
        versions = (
            await conn.execute(
                sa.text("SELECT version, spec->>'prompt' FROM probes WHERE probe_id = 'capital'")
            )
        ).all()
        assert sorted(v for v, _ in versions) == [1, 2]
        runs = await conn.scalar(
            sa.text(
                "SELECT count(DISTINCT probe_pk) FROM runs r JOIN probes p ON p.id = r.probe_pk "
                "WHERE p.probe_id = 'capital'"
            )
        )
        assert runs == 2  # the first version's runs still point at the first version


def test_cli_pass_never_writes_the_secret_to_database_or_logs(
    db_url: str, half_failing_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "CANARY_TEST_SECRET": SECRET}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "canary",
            "run",
            "--once",
            "--config",
            str(half_failing_config),
            "--log-level",
            "DEBUG",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # some runs failed: a CI gate sees it
    assert "m/p/broken" in proc.stdout and "server_error:4" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        table_names = [t for t in sa.inspect(conn).get_table_names()]
        dumped = [
            text
            for name in table_names
            for text in conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM "{name}" t')).scalars()
        ]
    engine.dispose()
    assert len(dumped) > 16
    assert not [row for row in dumped if SECRET in row]


async def test_a_cancelled_pass_records_in_flight_runs_as_cancelled(
    engine: AsyncEngine, upstream: ThreadedServer, tmp_path: Path
) -> None:
    """Shutdown mid-pass: requests in flight are stored as cancelled; nothing is half-written."""
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "basic.toml").write_text(PROBES)
    config_text = 'probes_dir = "probes"\n' + cell(
        "slow", "openai-chat", f"{upstream.url}/v1", "slow"
    ).replace('api_key = "env:CANARY_TEST_SECRET"\n', "")
    (tmp_path / "canary.toml").write_text(config_text)
    config = load_config(tmp_path / "canary.toml")
    probes = load_catalog(config.probes_dir).probes
    with anyio.move_on_after(0.5):
        await run_pass(engine, config.targets, probes)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT status, reason, repeat_index FROM runs"))).all()
    # Both probes were in flight (the upstream sleeps 2 s); the repeats after the first never started.
    assert sorted((r.status, r.reason, r.repeat_index) for r in rows) == [
        ("error", "cancelled", 0),
        ("error", "cancelled", 0),
    ]


async def test_a_shared_cell_pool_records_cells_and_probes_once_and_remembers_references(
    engine: AsyncEngine, half_failing_config: Path
) -> None:
    from canary.probing.cells import CellPool

    config = load_config(half_failing_config)
    probes = load_catalog(config.probes_dir).probes
    async with CellPool() as cells:
        await run_pass(engine, config.targets[:1], probes, cells=cells)
        registry = cells.registry
        assert set(registry.targets) == {"m/p/chat"} and len(registry.probes) == 2
        assert len(registry.references) == 2  # established in the first pass, kept in memory
        async with engine.begin() as conn:  # a second pass must not need these rows again
            await conn.execute(sa.text("UPDATE targets SET provider = 'changed-elsewhere'"))
        summary = await run_pass(engine, config.targets[:1], probes, cells=cells)
    assert summary.stored == 4 and summary.failed_runs == 0
    async with engine.connect() as conn:
        provider = await conn.scalar(sa.text("SELECT provider FROM targets"))
        references = await conn.scalar(sa.text("SELECT count(*) FROM reference_outputs"))
    assert provider == "changed-elsewhere" and references == 2
