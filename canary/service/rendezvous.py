"""Rendezvous (highest-random-weight) hashing of cells over replicas. Pure.

Every replica computes the same owner for a cell from the same member list, with no coordination;
when a member leaves, only its own cells move (each to the member with the next-highest weight),
and when one joins it takes about ``1/N`` of the cells from the others.
"""

from __future__ import annotations

from collections.abc import Iterable

from canary.probing.scheduler import stable_hash


def weight(member: str, cell: str) -> int:
    return stable_hash(f"{member}\0{cell}")


def owner(cell: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``cell`` (ties by name); None without members."""
    return max(members, key=lambda m: (weight(m, cell), m), default=None)


def cells_of(member: str, cells: Iterable[str], members: Iterable[str]) -> set[str]:
    """The cells ``member`` owns among ``members``."""
    everyone = sorted(set(members))
    return {cell for cell in cells if owner(cell, everyone) == member}
