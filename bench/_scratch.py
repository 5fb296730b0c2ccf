"""A scratch database for a benchmark: embedded PostgreSQL in a temporary directory, or a database
of its own on the server of ``$DATABASE_URL``; migrated, and dropped (or deleted) afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from canary.storage.engine import database, ensure_database, sqlalchemy_url, with_database


@contextmanager
def scratch_database(prefix: str = "canary_bench") -> Iterator[str]:
    """Yield the SQLAlchemy URL of a freshly migrated database."""
    server_url = os.environ.get("DATABASE_URL")
    data_dir = None if server_url else Path(tempfile.mkdtemp(prefix="canary-bench-pg-"))
    try:
        with database(server_url, data_dir, upgrade=False) as url:
            name = f"{prefix}_{uuid.uuid4().hex[:8]}"
            ensure_database(url, name)
            bench_url = sqlalchemy_url(with_database(url, name))
            try:
                with database(bench_url) as migrated:
                    yield migrated
            finally:
                admin = sa.create_engine(
                    sqlalchemy_url(with_database(url, "postgres")), isolation_level="AUTOCOMMIT"
                )
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    finally:
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
