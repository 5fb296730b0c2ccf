"""The data shipped with canary: the probe catalog, migrations, dashboards and scenarios.

In the repository these are the top-level folders ``probes/``, ``migrations/``,
``dashboards/`` and ``scenarios/`` (the single source). A built wheel carries copies under
``canary/_data/``; :func:`shipped` finds either through :mod:`importlib.resources`, so the
same code runs from a checkout, an editable install and an installed wheel.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path
from typing import Literal

ShippedDir = Literal["probes", "migrations", "dashboards", "scenarios"]


def shipped(name: ShippedDir) -> Path:
    """The directory of one kind of shipped data, as a real path on disk."""
    packaged = files("canary").joinpath("_data", name)
    if packaged.is_dir():
        with as_file(packaged) as path:  # a no-op for an installed (unzipped) wheel
            return Path(path)
    return Path(__file__).resolve().parent.parent / name
