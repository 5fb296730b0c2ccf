"""Alembic environment: migrations run on a synchronous psycopg connection."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from canary.storage.engine import sqlalchemy_url
from canary.storage.partitions import include_in_migrations
from canary.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def url() -> str:
    """canary passes its URL in code; the alembic CLI uses $DATABASE_URL, then alembic.ini."""
    explicit = config.attributes.get("canary_url") or os.environ.get("DATABASE_URL")
    return sqlalchemy_url(explicit or config.get_main_option("sqlalchemy.url") or "")


def run_migrations_offline() -> None:
    context.configure(
        url=url(), target_metadata=target_metadata, literal_binds=True, include_name=include_in_migrations
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_name=include_in_migrations
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, include_name=include_in_migrations
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
