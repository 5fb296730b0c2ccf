"""The distribution is self-contained: an sdist built from this tree, a wheel built from that
sdist, installed into a fresh virtual environment outside the tree, migrates a database, probes
the reference fleet, stores the runs and lists the dashboards, all from its own package data.

The fresh environment gets canary from the wheel only. Its dependencies come from the
environment running the tests, through a ``.pth`` file naming that environment's
site-packages: a plain path line, so that environment's own ``.pth`` files (the editable
install's finder among them) are not run and ``canary`` cannot resolve to the source tree.
Installing the dependencies for real would download or rebuild hundreds of megabytes and
prove nothing more about the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import uuid
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from canary.fleet import default_fleet_config, fleet_targets
from canary.fleet.running import RunningFleet, run_fleet_in_thread
from canary.storage.engine import alembic_config, ensure_database, sqlalchemy_url, with_database
from tests.conftest import drop_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("probes", "migrations", "dashboards", "scenarios")
CELLS = ("canary-small/first-party/short-context", "canary-large/cloud-a/front-door")
PROBE_SET = "arithmetic"
STEP_TIMEOUT_S = 180


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure shows its output (pip and canary explain themselves there)."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def shipped_files(folder: Path) -> list[Path]:
    """The files of a top-level data folder that a distribution must carry."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".") and p.suffix != ".pyc"
    ]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from that sdist), without build isolation, so without network.

    The sdist comes from setuptools' PEP 517 hook, as ``python -m build`` would call it.
    """
    out = tmp_path_factory.mktemp("dist")
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", hook, str(out)], cwd=ROOT).stdout.strip().splitlines()[-1]
    sdist = out / name
    wheels = out / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(wheels), str(sdist)], out
    )
    (wheel,) = wheels.glob("llm_quality_canary-*.whl")
    return sdist, wheel


def test_the_sdist_carries_the_data_folders_and_the_build_hook(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"setup.py", "MANIFEST.in", "pyproject.toml", "alembic.ini"} <= names
    for folder in SHIPPED:
        expected = {str(p.relative_to(ROOT)) for p in shipped_files(ROOT / folder)}
        assert expected and expected <= names, f"{folder}: missing {sorted(expected - names)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_carries_every_shipped_file_under_canary_data(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n) for n in names if n.endswith(".dist-info/METADATA")).decode()
    data = {n.removeprefix("canary/_data/") for n in names if n.startswith("canary/_data/")}
    for folder in SHIPPED:
        expected = {str(p.relative_to(ROOT)) for p in shipped_files(ROOT / folder)}
        assert expected == {n for n in data if n.split("/", 1)[0] == folder}, folder
    assert {"migrations/env.py", "migrations/script.py.mako", "scenarios/postmortem.toml"} <= data
    assert any(n.startswith("migrations/versions/") and n.endswith(".py") for n in data)
    assert any(n.startswith("probes/") and n.endswith(".toml") for n in data)
    assert {"dashboards/grafana/overview.json", "dashboards/provisioning/datasources/canary.yaml"} <= data
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The README's `pip install 'llm-quality-canary[bedrock]'` (and the image's extras).
    for extra in ("bedrock", "vertex", "fleet", "dashboards"):
        assert f"Provides-Extra: {extra}" in metadata
    assert 'botocore>=1.34; extra == "bedrock"' in metadata


@pytest.fixture(scope="module")
def installed(dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its ``bin`` directory."""
    _, wheel = dists
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    # clean_env: with the source tree on PYTHONPATH pip would see its egg-info and install nothing.
    run([*pip, "install", "--no-deps", "--no-index", str(wheel)], cwd=env_dir, env=clean_env())
    # Only now, so pip above saw an empty environment rather than this one's editable canary.
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run([str(python), "-c", where], env_dir).stdout.strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    return env_dir / "bin"


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    with run_fleet_in_thread(default_fleet_config()) as running:
        yield running


@pytest.fixture
def empty_database(pg_server: str) -> Iterator[str]:
    """A database with no tables at all, so ``canary db upgrade`` runs every migration."""
    name = f"t_wheel_{uuid.uuid4().hex[:12]}"
    ensure_database(pg_server, name)
    url = sqlalchemy_url(with_database(pg_server, name))
    yield url
    drop_database(pg_server, url)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus anything that could put the source tree on the path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def test_the_installed_wheel_finds_its_code_and_data_inside_the_new_environment(installed: Path) -> None:
    script = (
        "import json, canary; from canary.resources import shipped; "
        "print(json.dumps([canary.__file__] + [str(shipped(n)) for n in"
        " ('probes', 'migrations', 'dashboards', 'scenarios')]))"
    )
    cwd = installed.parent
    paths = json.loads(run([str(installed / "python"), "-c", script], cwd, clean_env()).stdout)
    prefix = str(installed.parent.resolve())
    assert all(str(Path(p).resolve()).startswith(prefix) for p in paths), paths
    assert not any(str(Path(p).resolve()).startswith(str(ROOT)) for p in paths)
    assert (installed / "canary").read_text(encoding="utf-8").startswith(f"#!{installed / 'python'}")


def test_the_installed_wheel_migrates_probes_the_fleet_and_lists_the_dashboards(
    installed: Path, fleet: RunningFleet, empty_database: str, tmp_path: Path
) -> None:
    canary = str(installed / "canary")
    env = clean_env(DATABASE_URL=empty_database)
    targets = [t for t in fleet_targets(fleet.config, fleet.base_url) if cell_of(t) in CELLS]
    assert len(targets) == len(CELLS)
    (tmp_path / "canary.toml").write_text(toml_targets(targets), encoding="utf-8")

    upgraded = run([canary, "db", "upgrade"], tmp_path, env)
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    assert "database at head" in upgraded.stdout
    engine = sa.create_engine(empty_database)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == head

        probed = run([canary, "run", "--once", "--probes", PROBE_SET], tmp_path, env)
        for cell in CELLS:
            assert cell in probed.stdout, probed.stdout
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE status = 'ok'), count(*), count(DISTINCT target_id)"
                    " FROM runs"
                )
            ).one()
    finally:
        engine.dispose()
    ok, total, cells = stored
    assert ok == total > 0 and cells == len(CELLS), stored

    listed = run([canary, "dashboards", "push", "--dry-run"], tmp_path, env)
    dashboards = json.loads((ROOT / "dashboards" / "grafana" / "overview.json").read_text(encoding="utf-8"))
    assert dashboards["title"] in listed.stdout
    assert "3 dashboard(s)" in listed.stdout and str(installed.parent) in listed.stdout


def cell_of(target: dict[str, object]) -> str:
    return f"{target['model']}/{target['platform']}/{target['pool']}"


def toml_targets(targets: list[dict[str, object]]) -> str:
    """``[[targets]]`` tables; every value is a string or a list of strings (JSON's form is TOML's)."""
    lines = []
    for target in targets:
        lines.append("[[targets]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in target.items()]
        lines.append("")
    return "\n".join(lines)
