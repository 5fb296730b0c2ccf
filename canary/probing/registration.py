"""Cells and probe versions recorded in the database, and their references loaded, in batches.

A pass needs its cell's and probes' row ids and the cell's reference outputs. Recorded by each
pass on its own, a replica given 10,000 cells at once opened one transaction per cell within the
same second and ran its connection pool dry (no run was stored for the first 40 s). Instead the
scheduler registers every cell it is given in one go (:func:`register`, chunked to stay under
PostgreSQL's parameter limit), and a pass that finds its cell unknown waits on the same lock, so
that at most one registration runs per process and it takes whatever is still pending.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import Target
from canary.probing.catalog import Probe
from canary.probing.cells import Registry
from canary.storage.writes import load_references, sync_probes, sync_targets

CHUNK_CELLS = 1_000  # cells per statement: 8 parameters a cell, far below psycopg's 65,535


def pending(registry: Registry, targets: Sequence[Target], probes: Sequence[Probe]) -> bool:
    """Whether any of ``targets`` or ``probes`` is unrecorded, or a target's references unloaded."""
    if registry.unsynced_targets(targets) or any((p.id, p.version) not in registry.probes for p in probes):
        return True
    return any(registry.targets[t.cell][1] not in registry.references_loaded for t in targets)


async def register(
    engine: AsyncEngine, registry: Registry, targets: Sequence[Target], probes: Sequence[Probe]
) -> None:
    """Record the unrecorded ``targets`` and ``probes`` and load the targets' references.

    One transaction per :data:`CHUNK_CELLS` cells (the probe versions with the first), one
    query per chunk for the references; nothing at all when everything is known already.
    """
    if not pending(registry, targets, probes):
        return
    async with registry.lock:  # one registration at a time: a waiter finds its cells done
        new_targets = registry.unsynced_targets(targets)
        unknown = {(p.id, p.version): p for p in probes if (p.id, p.version) not in registry.probes}
        new_probes = list(unknown.values())
        for start in range(0, max(len(new_targets), 1 if new_probes else 0), CHUNK_CELLS):
            chunk = new_targets[start : start + CHUNK_CELLS]
            async with engine.begin() as conn:
                synced = await sync_targets(conn, chunk)
                if start == 0:
                    registry.probes.update(await sync_probes(conn, new_probes))
            registry.targets.update({t.cell: (t, synced[t.cell]) for t in chunk})
        ids = [registry.targets[t.cell][1] for t in targets]
        unloaded = sorted({i for i in ids if i not in registry.references_loaded})
        for start in range(0, len(unloaded), CHUNK_CELLS):
            chunk_ids = unloaded[start : start + CHUNK_CELLS]
            async with engine.connect() as conn:
                registry.references.update(await load_references(conn, chunk_ids))
            registry.references_loaded.update(chunk_ids)
