"""How replicas show themselves to PostgreSQL, so the status page can tell who is up and who leads.

Every connection of ``canary serve`` carries ``application_name`` = ``canary <host>:<pid>``
(:func:`replica_name`); the leader's lock connection carries ``canary-leader <host>:<pid>``.
The page reads both back from ``pg_stat_activity`` and ``pg_locks``: a replica is listed while it
holds connections, and the leader is whoever holds the advisory lock :data:`LOCK_KEY`.
"""

from __future__ import annotations

import os
import socket

LOCK_KEY = 0x63616E617279  # "canary": one advisory lock for all singleton duties
REPLICA_PREFIX = "canary "
LEADER_PREFIX = "canary-leader "


def replica_name() -> str:
    """``host:pid`` of this process (read when called: a forked child is a replica of its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def application_name(leader: bool = False) -> str:
    # PostgreSQL keeps the first 63 bytes of an application_name.
    return ((LEADER_PREFIX if leader else REPLICA_PREFIX) + replica_name())[:63]
