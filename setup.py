"""Build hook: put the shipped data folders inside the wheel as ``canary/_data/<name>/``.

pyproject.toml holds all metadata; this file only adds a ``build_py`` step. In the repository
``probes/``, ``migrations/``, ``dashboards/`` and ``scenarios/`` are top-level folders, the
single source; :func:`canary.resources.shipped` finds the copies in an installed wheel and falls
back to the top-level folders in a checkout or an editable install. MANIFEST.in puts the same
folders into the sdist, so a wheel built from the sdist carries them too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("probes", "migrations", "dashboards", "scenarios")  # canary.resources.ShippedDir
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[co]", ".*")


class BuildPyWithData(build_py):
    """``build_py`` that also copies the shipped data folders into ``<build_lib>/canary/_data``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level folders (the fallback of shipped())
        for name in SHIPPED:
            source = HERE / name
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing; the wheel would ship without it")
            target = Path(self.build_lib) / "canary" / "_data" / name
            # build/ survives between builds: a file deleted from the source must not linger.
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithData})
