"""Migrations: upgrade from empty, downgrade to base, upgrade again, and no drift from the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from canary.storage.engine import alembic_config, migrate
from canary.storage.partitions import include_in_migrations
from canary.storage.tables import Base
from tests.conftest import create_test_database, drop_database


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {t for t in sa.inspect(engine).get_table_names() if include_in_migrations(t, "table", {})} - {
            "alembic_version"
        }
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trips_and_matches_models(pg_server: str) -> None:
    url = create_test_database(pg_server)  # cloned from the migrated template
    try:
        assert {"targets", "probes", "runs", "scores", "reference_outputs"} <= tables(url)
        command.downgrade(alembic_config(url), "base")
        assert tables(url) == set()
        migrate(url)
        assert set(Base.metadata.tables) <= tables(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": include_in_migrations})
            diff = compare_metadata(context, Base.metadata)
        engine.dispose()
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        drop_database(pg_server, url)
