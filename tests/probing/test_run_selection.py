"""``canary run --once`` selects cells and probes with the one glob rule and honours a target's probes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.loopback import ThreadedServer, serve_in_thread
from tests.probing.test_runner import PROBES  # the same two-probe catalog
from tests.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve_in_thread(ScriptedUpstream().app) as server:
        yield server


def write_config(tmp_path: Path, upstream: ThreadedServer, cells: dict[str, str]) -> Path:
    """Cells ``{"platform/pool": "extra toml lines"}`` of model ``m`` on the healthy upstream."""
    (tmp_path / "probes").mkdir(exist_ok=True)
    (tmp_path / "probes" / "basic.toml").write_text(PROBES)
    text = 'probes_dir = "probes"\n'
    for name, extra in cells.items():
        platform, pool = name.split("/")
        text += (
            f'[[targets]]\nmodel = "m"\nplatform = "{platform}"\npool = "{pool}"\n'
            f'provider = "openai-chat"\nbase_url = "{upstream.url}/v1"\nmodel_id = "ok"\n{extra}\n'
        )
    path = tmp_path / "canary.toml"
    path.write_text(text)
    return path


def canary_run(db_url: str, config: Path, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}
    command = [sys.executable, "-m", "canary", "run", "--once", "--config", str(config), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def runs_per_cell(db_url: str) -> dict[str, dict[str, int]]:
    """Stored runs by cell and probe id."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.cell, p.probe_id, count(*) AS n FROM runs r JOIN targets t ON t.id = r.target_id "
                "JOIN probes p ON p.id = r.probe_pk GROUP BY t.cell, p.probe_id"
            )
        ).all()
    engine.dispose()
    counts: dict[str, dict[str, int]] = {}
    for cell, probe_id, n in rows:
        counts.setdefault(cell, {})[probe_id] = n
    return counts


def test_run_cells_with_an_exclusion_probes_the_matching_cells_but_the_excluded_one(
    db_url: str, tmp_path: Path, upstream: ThreadedServer
) -> None:
    config = write_config(tmp_path, upstream, {"p/a": "", "p/b": "", "q/a": ""})
    canary_run(db_url, config, "--cells", "m/p/*,!m/p/b", "--probes", "!capital-repeat")
    assert runs_per_cell(db_url) == {"m/p/a": {"capital": 1}}


def test_run_cells_with_only_an_exclusion_probes_every_other_cell(
    db_url: str, tmp_path: Path, upstream: ThreadedServer
) -> None:
    config = write_config(tmp_path, upstream, {"p/a": "", "p/b": "", "q/a": ""})
    canary_run(db_url, config, "--cells", "!m/p/b", "--probes", "capital")
    assert runs_per_cell(db_url) == {"m/p/a": {"capital": 1}, "m/q/a": {"capital": 1}}


def test_run_honours_each_targets_probes_key_as_the_service_does(
    db_url: str, tmp_path: Path, upstream: ThreadedServer
) -> None:
    cells = {"p/only": 'probes = "capital"', "p/but": 'probes = ["*", "!capital"]', "p/all": ""}
    config = write_config(tmp_path, upstream, cells)
    canary_run(db_url, config)
    assert runs_per_cell(db_url) == {
        "m/p/only": {"capital": 1},
        "m/p/but": {"capital-repeat": 3},
        "m/p/all": {"capital": 1, "capital-repeat": 3},
    }
