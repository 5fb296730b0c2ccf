"""How a replica names itself: ``host:pid`` on the status page, and on its PostgreSQL connections.

Every connection of ``canary serve`` carries ``application_name`` = ``canary <host>:<pid>``, so a
DBA reading ``pg_stat_activity`` sees which replica holds which session. Who is alive and who
leads is read from ``replicas`` and ``leader_lease`` (:mod:`canary.service.membership`).
"""

from __future__ import annotations

import os
import socket

REPLICA_PREFIX = "canary "


def replica_name() -> str:
    """``host:pid`` of this process (read when called: a forked child is a replica of its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def application_name() -> str:
    # PostgreSQL keeps the first 63 bytes of an application_name.
    return (REPLICA_PREFIX + replica_name())[:63]
