"""Guards on the architecture: pure modules stay pure, JAX stays off the start-up path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [
    ROOT / "canary" / "config" / "globs.py",
    # The schemas: detection's and verdicts' pure halves import them, so they stay pure too.
    ROOT / "canary" / "config" / "sections.py",
    ROOT / "canary" / "config" / "receivers.py",
    ROOT / "canary" / "config" / "secrets.py",
    ROOT / "canary" / "scoring",
    ROOT / "canary" / "stats",
    ROOT / "canary" / "detection" / "decisions.py",
    ROOT / "canary" / "detection" / "equivalence.py",
    ROOT / "canary" / "verdicts" / "judgement.py",
    ROOT / "canary" / "verdicts" / "equivalence.py",
    ROOT / "canary" / "service" / "health.py",
    ROOT / "canary" / "service" / "sparkline.py",
]
IO_MODULES = {"sqlalchemy", "httpx", "anyio", "psycopg", "asyncio", "socket", "requests"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.py")))
        elif p.exists():
            files.append(p)
    return files


@pytest.mark.parametrize("path", python_files(PURE), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_import_no_io_library(path: Path) -> None:
    assert not imported_modules(path) & IO_MODULES


def test_cli_starts_without_importing_jax() -> None:
    code = "import sys, canary.cli; sys.exit(1 if 'jax' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_command_has_help() -> None:
    from click.testing import CliRunner

    from canary.cli import main

    runner = CliRunner()

    def walk(group, prefix):  # type: ignore[no-untyped-def]
        for name, command in group.commands.items():
            yield [*prefix, name], command
            if hasattr(command, "commands"):
                yield from walk(command, [*prefix, name])

    commands = list(walk(main, []))
    assert commands
    for args, _ in commands:
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.output
