"""Rendezvous hashing: every cell has one owner, and a member leaving moves only its own cells."""

from __future__ import annotations

from canary.service.rendezvous import cells_of, owner

CELLS = [f"m/p/pool{i}" for i in range(300)]


def test_every_cell_has_exactly_one_owner_and_the_shares_are_even() -> None:
    members = ["a", "b", "c"]
    shares = [cells_of(m, CELLS, members) for m in members]
    assert sum(len(s) for s in shares) == len(CELLS)
    assert set().union(*shares) == set(CELLS)
    assert all(70 <= len(s) <= 130 for s in shares), [len(s) for s in shares]


def test_a_member_leaving_moves_only_its_own_cells() -> None:
    before = {cell: owner(cell, ["a", "b", "c"]) for cell in CELLS}
    after = {cell: owner(cell, ["a", "c"]) for cell in CELLS}
    moved = {cell for cell in CELLS if before[cell] != after[cell]}
    assert moved == {cell for cell in CELLS if before[cell] == "b"}


def test_the_owner_does_not_depend_on_the_order_members_are_listed() -> None:
    assert all(owner(cell, ["a", "b", "c"]) == owner(cell, ["c", "a", "b"]) for cell in CELLS)
    assert owner("m/p/x", []) is None
