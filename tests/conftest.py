"""Shared fixtures: a real PostgreSQL (embedded, or $TEST_DATABASE_URL) with one fresh database
per test cloned from a migrated template, and the anyio backend."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.storage.engine import (
    async_engine,
    ensure_database,
    migrate,
    sqlalchemy_url,
    start_embedded,
    with_database,
)

TEMPLATE = "canary_template"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server URL and a migrated template database on it.

    The embedded server's data lives in a directory of its own rather than pytest's basetemp,
    which pytest prunes when several sessions run at once (a server lost its files that way).
    """
    external = os.environ.get("TEST_DATABASE_URL")
    server = None
    data_root = None
    if external:
        url = external
    else:
        data_root = Path(tempfile.mkdtemp(prefix="canary-test-pg-"))
        url, server = start_embedded(data_root / "data")
    admin = sa.create_engine(sqlalchemy_url(with_database(url, "postgres")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
    admin.dispose()
    ensure_database(url, TEMPLATE)
    migrate(with_database(url, TEMPLATE))
    yield url
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]
    if data_root is not None:
        shutil.rmtree(data_root, ignore_errors=True)


def create_test_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    ensure_database(server_url, name, template=TEMPLATE)
    return sqlalchemy_url(with_database(server_url, name))


def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = sa.create_engine(
        sqlalchemy_url(with_database(server_url, "postgres")), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def database_at(server_url: str, revision: str) -> Iterator[str]:
    """A new database migrated only up to ``revision`` (where a migration test starts), dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    ensure_database(server_url, name)
    url = sqlalchemy_url(with_database(server_url, name))
    migrate(url, revision)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def db_url(pg_server: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    url = create_test_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = async_engine(db_url)
    yield eng
    # No test may leave a connection checked out (a leak would exhaust the pool in the service).
    assert "Current Checked out connections: 0" in eng.pool.status()
    await eng.dispose()


@pytest.fixture
def write_toml(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(text: str, name: str = "canary.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
