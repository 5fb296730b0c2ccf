"""Database helpers shared by both parts of ``bench/scale.py``: databases, sizes, CPU, detection."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from canary.config.sections import DetectionSpec
from canary.storage.engine import async_engine, ensure_database, migrate, sqlalchemy_url, with_database

# Bytes of the raw tables (every partition, with indexes and TOAST).
SIZE = (
    "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i"
    " WHERE i.inhparent IN ('runs'::regclass, 'scores'::regclass, 'observations'::regclass)"
)


def postgres_cpu_s(server_pid: int) -> float:
    """User + system CPU seconds of the PostgreSQL server and all its backends so far."""
    root = psutil.Process(server_pid)
    own = root.cpu_times()
    # Backends that exited count through the postmaster, which reaps them (children_*).
    total = own.children_user + own.children_system
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def new_database(server_url: str, name: str) -> str:
    ensure_database(server_url, name)
    url = sqlalchemy_url(with_database(server_url, name))
    migrate(url)
    return url


def drop(server_url: str, name: str) -> None:
    admin = sa.create_engine(
        sqlalchemy_url(with_database(server_url, "postgres")), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text(sql))
    finally:
        engine.dispose()


def detection_rounds_s(url: str, times: list[datetime]) -> list[float]:
    """Seconds of a detection round at each of ``times``, in order, on one engine."""
    from canary.detection.detect import detect

    async def rounds() -> list[float]:
        engine = async_engine(url)
        out = []
        try:
            for at in times:
                started = time.perf_counter()
                await detect(engine, DetectionSpec(), at)
                out.append(time.perf_counter() - started)
            return out
        finally:
            await engine.dispose()

    return asyncio.run(rounds())
