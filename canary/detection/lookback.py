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

    def between(self, start_us: int, cut_us: int) -> Observations:
        """The observations with ``start < at < cut``."""
        lo = int(np.searchsorted(self.at_us, start_us, side="right"))
        hi = int(np.searchsorted(self.at_us, cut_us, side="left"))
        return Observations(*(a[lo:hi] for a in self._arrays()))

    def then(self, later: Observations) -> Observations:
        return Observations(
            *(np.concatenate([a, b]) for a, b in zip(self._arrays(), later._arrays(), strict=True))
        )

    def _arrays(self) -> tuple[Ints, Ints, Ints, Ints, Ints]:
        return self.at_us, self.probe, self.n, self.failures, self.passes

    @property
    def at(self) -> npt.NDArray[np.float64]:
        """Epoch seconds: the same doubles as the decimal seconds would parse to (µs / 10⁶, rounded once)."""
        return self.at_us / 1e6


@dataclass
class _Kept:
    start: datetime
    until: datetime
    valid_after: Refreshed
    streams: dict[Key, Observations]


_KEPT: weakref.WeakKeyDictionary[sa.Engine, _Kept] = weakref.WeakKeyDictionary()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _ints(text: str) -> Ints:
    return np.fromstring(text, dtype=np.int64, sep=",")


async def _read(
    conn: AsyncConnection, start: datetime, cut: datetime, now: datetime
) -> dict[Key, Observations]:
    rows = await conn.execute(sa.text(STREAM_ARRAYS), {"start": start, "cut": cut, "now": now})
    return {
        (r.target_id, r.metric): Observations(
            _ints(r.at), _ints(r.probe), _ints(r.n), _ints(r.failures), _ints(r.passes)
        )
        for r in rows.all()
    }


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
        streams = await _read(conn, start, start, now)
    else:
        tail = await _read(conn, start, cut, now)
        start_us, cut_us = _us(start), _us(cut)
        streams = {}
        for key, head in kept.streams.items():
            kept_part = head.between(start_us, cut_us)
            new = tail.pop(key, None)
            joined = kept_part.then(new) if new is not None else kept_part
            if joined.at_us.size:
                streams[key] = joined
        streams.update(tail)
    streams = dict(sorted(streams.items()))
    if refreshed is not None:
        _KEPT[engine] = _Kept(start, now, refreshed, streams)
    else:
        _KEPT.pop(engine, None)
    return streams
