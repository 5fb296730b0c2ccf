"""Each (cell, metric)'s observations over the look-back, kept between rounds: a round reads what is new.

A round's streams are every observation of the last ``history_s`` (six hours: 720,000 rows at
1,000 cells), most of them read by the previous round too. Observations change only where a
refresh recomputed them (:data:`canary.storage.observations.REFRESHED` names the ranges of
``at``), so the arrays read by one round are kept per engine, and the next round, when every
refresh since was this process's own and followed on from the last one known (as in
:mod:`canary.detection.baselines`), keeps the observations before the oldest recomputed range
and before the previous round's ``now``, and reads from there on only. Rows are ordered by
``(at, probe_pk, pass_id)`` and cut on ``at`` alone, so the kept head and the new tail join into
exactly the arrays a full read gives. Another process refreshing between our refresh and our
read goes unseen for one round only: its progress breaks the chain, and the next round reads all.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canary.storage.observations import REFRESHED, Refreshed

Key = tuple[int, str]
Ints = npt.NDArray[np.int64]

# Each (cell, metric)'s observations as comma-separated columns, oldest first: thousands of rows
# of text instead of a million rows of values, parsed by numpy. Times are integer microseconds
# (exact, and cut without float rounding). A pass is numbered by the first 64 bits of its id:
# the detector only asks whether neighbours share a pass, and a number of the row's own needs no
# window over every row of the look-back (a sort of them all by pass id).
_ORDER = "ORDER BY at, probe_pk, pass_id"
PASS_NUMBER = "('x' || translate(left(pass_id::text, 18), '-', ''))::bit(64)::bigint"
STREAM_ARRAYS = f"""
SELECT target_id, metric,
       string_agg((extract(epoch FROM at) * 1000000)::bigint::text, ',' {_ORDER}) AS at,
       string_agg(probe_pk::text, ',' {_ORDER}) AS probe,
       string_agg(n::text, ',' {_ORDER}) AS n,
       string_agg(failures::text, ',' {_ORDER}) AS failures,
       string_agg({PASS_NUMBER}::text, ',' {_ORDER}) AS passes
FROM observations
WHERE at > :start AND at >= :cut AND at <= :now
GROUP BY target_id, metric
"""  # ordered by (target id, metric) in Python: kept and new streams are merged there


@dataclass(frozen=True)
class Observations:
    """One stream's observations, oldest first: time (µs since the epoch), probe version, scores,
    failures and pass number."""

    at_us: Ints
    probe: Ints
    n: Ints
    failures: Ints
    passes: Ints

    def _arrays(self) -> tuple[Ints, Ints, Ints, Ints, Ints]:
        return self.at_us, self.probe, self.n, self.failures, self.passes

    @property
    def at(self) -> npt.NDArray[np.float64]:
        """Epoch seconds: the same doubles as the decimal seconds would parse to (µs / 10⁶, rounded once)."""
        return self.at_us / 1e6


@dataclass(frozen=True)
class _Block:
    """Many streams' observations in one set of arrays, ordered by key, then oldest first:
    ``owner`` is each observation's index in ``keys``."""

    keys: list[Key]
    owner: Ints
    all: Observations

    def streams(self) -> dict[Key, Observations]:
        """Each stream's arrays: views of the block's, no copies."""
        ends = np.cumsum(np.bincount(self.owner, minlength=len(self.keys)))
        arrays = self.all._arrays()
        out, lo = {}, 0
        for key, hi in zip(self.keys, ends.tolist(), strict=True):
            out[key] = Observations(*(a[lo:hi] for a in arrays))
            lo = hi
        return out


@dataclass
class _Kept:
    start: datetime
    until: datetime
    valid_after: Refreshed
    block: _Block


_KEPT: weakref.WeakKeyDictionary[sa.Engine, _Kept] = weakref.WeakKeyDictionary()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _ints(text: str) -> Ints:
    return np.fromstring(text, dtype=np.int64, sep=",")


async def _read_block(conn: AsyncConnection, start: datetime, cut: datetime, now: datetime) -> _Block:
    rows = (await conn.execute(sa.text(STREAM_ARRAYS), {"start": start, "cut": cut, "now": now})).all()
    if not rows:
        return _Block([], np.zeros(0, np.int64), Observations(*(np.zeros(0, np.int64) for _ in range(5))))
    # Every stream's text joined and parsed at once: five numpy calls, not five per stream.
    columns = [
        _ints(",".join(getattr(r, c) for r in rows)) for c in ("at", "probe", "n", "failures", "passes")
    ]
    sizes = [r.at.count(",") + 1 for r in rows]
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    return _merge([([(r.target_id, r.metric) for r in rows], owner, Observations(*columns))])


def _merge(parts: list[tuple[list[Key], Ints, Observations]]) -> _Block:
    """The parts' streams as one block ordered by key; a stream in several parts keeps the
    parts' order (each part oldest first, the earlier part's observations older)."""
    keys = sorted({k for part_keys, _, _ in parts for k in part_keys})
    index = {k: i for i, k in enumerate(keys)}
    owner = np.concatenate(
        [np.array([index[k] for k in part_keys], dtype=np.int64)[own] for part_keys, own, _ in parts]
    )
    order = np.argsort(owner, kind="stable")
    joined = Observations(
        *(
            np.concatenate(arrays)[order]
            for arrays in zip(*(obs._arrays() for _, _, obs in parts), strict=True)
        )
    )
    return _Block(keys, owner[order], joined)


def _without_empty(block: _Block) -> _Block:
    sizes = np.bincount(block.owner, minlength=len(block.keys))
    if sizes.all():
        return block
    renumber = np.cumsum(sizes > 0) - 1
    keys = [k for k, size in zip(block.keys, sizes.tolist(), strict=True) if size]
    return _Block(keys, renumber[block.owner], block.all)


def _cut(kept: _Kept | None, refreshed: Refreshed | None, start: datetime, now: datetime) -> datetime | None:
    """Where this round must read from, or ``None`` for everything (nothing kept can be trusted)."""
    if kept is None or refreshed is None or refreshed is kept.valid_after:
        return None
    if refreshed.found != kept.valid_after.left or start < kept.start or now < kept.until:
        return None
    return min([kept.until, *(lo for lo, _ in refreshed.ranges)])


async def lookback(conn: AsyncConnection, start: datetime, now: datetime) -> dict[Key, Observations]:
    """Every (cell, metric)'s observations with ``start < at <= now``, as a full read would give."""
    engine = conn.sync_engine
    refreshed = REFRESHED.get(engine)
    kept = _KEPT.get(engine)
    cut = _cut(kept, refreshed, start, now)
    if kept is None or cut is None or cut <= start:
        block = await _read_block(conn, start, start, now)
    else:
        tail = await _read_block(conn, start, cut, now)
        at_us = kept.block.all.at_us
        inside = (at_us > _us(start)) & (at_us < _us(cut))
        head = Observations(*(a[inside] for a in kept.block.all._arrays()))
        block = _without_empty(
            _merge([(kept.block.keys, kept.block.owner[inside], head), (tail.keys, tail.owner, tail.all)])
        )
    if refreshed is not None:
        _KEPT[engine] = _Kept(start, now, refreshed, block)
    else:
        _KEPT.pop(engine, None)
    return block.streams()
