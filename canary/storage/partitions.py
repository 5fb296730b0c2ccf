"""Day partitions of ``runs``, ``scores`` and ``observations``: created ahead, dropped whole.

The tables are partitioned by range on their time column (``runs.started_at``,
``scores.created_at``, which is its run's ``started_at``, ``observations.at``), one partition
per UTC day named ``runs_p20261201``, plus a ``DEFAULT`` partition that catches rows of a day
not created yet (a leader that was down for days, a backfill) so that no write ever fails for
want of a partition.

:func:`maintain` is the leader's duty (:class:`canary.service.app.Duty`):

1. Create the partitions from today to ``partitions_ahead_days`` ahead. A day whose rows already
   sit in the default partition is moved out of it in the same transaction.
2. Drop the day partitions older than ``raw_retention_days`` (scores first, then runs: a drop is a
   catalog change, instant whatever the partition holds) and delete expired rows from the
   default partitions.
3. Delete minute rollups older than ``raw_retention_days`` (they cannot be recomputed once the
   raw rows are gone, and longer ranges read the hour rollups) and hour rollups older than
   ``rollup_retention_days``. Findings, incidents, deploys and alerts are never deleted here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canary.config.sections import StorageSpec

log = logging.getLogger(__name__)

PARTITIONED = {"runs": "started_at", "scores": "created_at", "observations": "at"}  # table -> partition key
# What retention deletes from the rollups: table -> (time column, which retention applies).
ROLLUPS = {
    "score_rollup_minute": ("minute", "raw"),
    "run_rollup_minute": ("minute", "raw"),
    "score_rollup_hour": ("hour", "rollup"),
    "run_rollup_hour": ("hour", "rollup"),
    "observation_rollup_hour": ("hour", "rollup"),
}
MAINTENANCE_INTERVAL_S = 600.0
LOCK_TIMEOUT = "5s"  # a drop waits for running queries on the table; give up and retry next time
_NAME = re.compile(r"^(runs|scores|observations)_(p\d{8}|default)$")


def is_partition(name: str) -> bool:
    """Whether a table name is one of the partitions this module manages (Alembic skips them)."""
    return _NAME.match(name) is not None


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition name holds; ``None`` for the default partition."""
    match = _NAME.match(name)
    if match is None or match.group(2) == "default":
        return None
    return datetime.strptime(match.group(2)[1:], "%Y%m%d").date()


def _bounds(day: date) -> tuple[str, str]:
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


def create_partition_sql(table: str, day: date) -> str:
    """DDL of one day's partition (the table must not have rows of that day in its default)."""
    lo, hi = _bounds(day)
    name = partition_name(table, day)
    return f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{lo}') TO ('{hi}')"


def move_out_of_default_sql(table: str, day: date) -> list[str]:
    """A day's partition for rows already in the default one: detach-free, in one transaction.

    1. Create the day's table like the parent. 2. Move the day's rows out of the default
    partition into it. 3. Attach it (which checks its rows fit the range, and that the default
    holds none of them any more).
    """
    lo, hi = _bounds(day)
    name, column = partition_name(table, day), PARTITIONED[table]
    where = f"{column} >= '{lo}' AND {column} < '{hi}'"
    return [
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)",
        f"WITH moved AS (DELETE FROM {table}_default WHERE {where} RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved",
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')",
    ]


async def day_partitions(conn: AsyncConnection, table: str) -> dict[date, str]:
    """The table's day partitions that exist now: day -> name."""
    rows = await conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(:t AS regclass)"
        ),
        {"t": table},
    )
    out = {}
    for (name,) in rows.all():
        day = day_of(name)
        if day is not None:
            out[day] = name
    return out


async def ensure_partitions(conn: AsyncConnection, first: date, last: date) -> list[str]:
    """Create every missing day partition of both tables for ``first..last``; returns their names."""
    created = []
    for table, column in PARTITIONED.items():
        existing = await day_partitions(conn, table)
        day = first
        while day <= last:
            if day not in existing:
                lo, hi = _bounds(day)
                stray = await conn.scalar(
                    sa.text(
                        f"SELECT EXISTS (SELECT 1 FROM {table}_default"
                        f" WHERE {column} >= :lo AND {column} < :hi)"
                    ),
                    {"lo": datetime.fromisoformat(lo), "hi": datetime.fromisoformat(hi)},
                )
                for sql in (
                    move_out_of_default_sql(table, day) if stray else [create_partition_sql(table, day)]
                ):
                    await conn.execute(sa.text(sql))
                created.append(partition_name(table, day))
            day += timedelta(days=1)
    return created


async def drop_expired(conn: AsyncConnection, before: date) -> list[str]:
    """Drop the day partitions of days before ``before`` (scores first) and expired default rows."""
    await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    dropped = []
    for table in ("scores", "runs", "observations"):
        for day, name in sorted((await day_partitions(conn, table)).items()):
            if day < before:
                await conn.execute(sa.text(f"DROP TABLE {name}"))
                dropped.append(name)
        cutoff = datetime.combine(before, datetime.min.time(), UTC)
        await conn.execute(
            sa.text(f"DELETE FROM {table}_default WHERE {PARTITIONED[table]} < :cutoff"), {"cutoff": cutoff}
        )
    return dropped


async def trim_rollups(conn: AsyncConnection, now: datetime, spec: StorageSpec) -> int:
    """Delete rollup rows past their retention; returns how many."""
    deleted = 0
    for table, (column, kind) in ROLLUPS.items():
        days = spec.raw_retention_days if kind == "raw" else spec.rollup_retention_days
        result = await conn.execute(
            sa.text(f"DELETE FROM {table} WHERE {column} < :cutoff"), {"cutoff": now - timedelta(days=days)}
        )
        deleted += int(result.rowcount or 0)
    return deleted


@dataclass(frozen=True)
class Maintenance:
    """What one :func:`maintain` call did."""

    created: list[str]
    dropped: list[str]
    rollup_rows_deleted: int


async def maintain(engine: AsyncEngine, spec: StorageSpec, now: datetime) -> Maintenance:
    """The leader's storage duty: partitions ahead, expired ones dropped, rollups trimmed."""
    today = now.astimezone(UTC).date()
    async with engine.begin() as conn:
        created = await ensure_partitions(conn, today, today + timedelta(days=spec.partitions_ahead_days))
    async with engine.begin() as conn:
        dropped = await drop_expired(conn, today - timedelta(days=spec.raw_retention_days))
    async with engine.begin() as conn:
        trimmed = await trim_rollups(conn, now, spec)
    if created or dropped:
        log.info("partitions created %s, dropped %s", created, dropped)
    return Maintenance(created, dropped, trimmed)


def include_in_migrations(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: autogenerate compares the parents, not each day's partition."""
    return not (type_ == "table" and name is not None and is_partition(name))
