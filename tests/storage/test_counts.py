"""The one count query: hand-counted seeded data, each grouping, and every reader agreeing on it.

The seed, relative to NOW (12:00) and SINCE (10:00), failure by failure:
- ``m/p/a`` runs probes p0 and p1 every 10 minutes from 10:00 to 11:50 (12 runs each).
  ``unexpected_script`` fails on p0 from 11:30 on (3) and on p1 on the hour (10:00, 11:00);
  ``answered`` never fails. One more run timed out at 11:05 and one was cancelled at 11:06:
  neither is scored.
- ``m/p/b`` runs p0 every 15 minutes from 11:00 to 11:45 in two sessions, all tagged with a
  deploy: session s1 (11:15, 11:45) fails both metrics. One untagged run at exactly NOW fails
  ``answered``.
- ``m/q/a`` ran once at 09:50, failing everything: outside every window below.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.sections import DetectionSpec
from canary.detection import queries
from canary.detection.decisions import Candidate, Counts
from canary.detection.evidence import sessions as session_breakdown
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.storage import observations
from canary.storage.counts import AgeBuckets, CalendarBuckets, run_counts, score_counts
from canary.storage.rollups import refresh_rollups
from canary.storage.tables import ProbeRow, RunRow
from canary.verdicts.deploys import REQUEST_ERRORS, collect_samples
from canary.verdicts.judgement import MetricSamples, VerdictPolicy
from tests.seeding import add_cells, add_passes, add_probes

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=2)
A, B, C = "m/p/a", "m/p/b", "m/q/a"
ANSWERED, SCRIPT = "answered", "unexpected_script"
H10, H11 = SINCE, SINCE + timedelta(hours=1)

# (cell, metric) -> (n, failures) over [SINCE, NOW): what verdicts and rollups see
LEFT_CLOSED = {(A, ANSWERED): (24, 0), (A, SCRIPT): (24, 5), (B, ANSWERED): (4, 2), (B, SCRIPT): (4, 2)}
# over (SINCE, NOW]: detection's window drops A's 10:00 runs (one p1 failure) and takes B's run at NOW
RIGHT_CLOSED = {(A, ANSWERED): (22, 0), (A, SCRIPT): (22, 4), (B, ANSWERED): (5, 3), (B, SCRIPT): (5, 2)}
# over [SINCE, ...): the API's window has no upper end
OPEN_ENDED = {(A, ANSWERED): (24, 0), (A, SCRIPT): (24, 5), (B, ANSWERED): (5, 3), (B, SCRIPT): (5, 2)}


@pytest.fixture
async def ids(engine: AsyncEngine) -> dict[str, int]:
    rng = np.random.default_rng(0)  # every rate is 0 or 1: nothing here is random
    ten, quarter = timedelta(minutes=10), timedelta(minutes=15)
    async with engine.begin() as conn:
        cells = await add_cells(conn, [A, B, C])
        p0, p1 = await add_probes(conn, 2)
        late = {ANSWERED: 0.0, SCRIPT: lambda t: float(t >= NOW - timedelta(minutes=30))}
        await add_passes(conn, cells[A], [p0], SINCE, NOW, ten, late, rng)
        hourly = {ANSWERED: 0.0, SCRIPT: lambda t: float(t.minute == 0)}
        await add_passes(conn, cells[A], [p1], SINCE, NOW, ten, hourly, rng)
        for minute, reason in ((5, "timeout"), (6, "cancelled")):
            await conn.execute(
                sa.insert(RunRow).values(
                    pass_id=sa.func.gen_random_uuid(),
                    target_id=cells[A],
                    probe_pk=p0,
                    started_at=H11 + timedelta(minutes=minute),
                    status="error",
                    reason=reason,
                    latency_ms=30000.0,
                )
            )
        healthy = {ANSWERED: 0.0, SCRIPT: 0.0}
        await add_passes(
            conn, cells[B], [p0], H11, NOW, quarter, healthy, rng, sessions=2, session_rates={1: 1.0}
        )
        await conn.execute(sa.update(RunRow).where(RunRow.target_id == cells[B]).values(deploy_id="d1"))
        await add_passes(conn, cells[B], [p0], NOW, NOW + ten, ten, {ANSWERED: 1.0, SCRIPT: 0.0}, rng)
        await add_passes(conn, cells[C], [p0], SINCE - ten, SINCE, ten, {ANSWERED: 1.0, SCRIPT: 1.0}, rng)
    return cells


async def probe_pks(engine: AsyncEngine) -> dict[str, int]:
    """Probe id -> the row id of its (only) version."""
    async with engine.connect() as conn:
        return {pid: pk for pid, pk in (await conn.execute(sa.select(ProbeRow.probe_id, ProbeRow.id))).all()}


async def fetch(engine: AsyncEngine, query: sa.Executable) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]


def by_cell(rows: Iterable[tuple[Any, ...]], ids: dict[str, int]) -> dict[tuple[Any, ...], tuple[int, int]]:
    """``(target_id, metric, *keys, n, failures)`` rows -> {(cell, metric, *keys): (n, failures)}."""
    cells = {tid: name for name, tid in ids.items()}
    return {(cells[r[0]], *r[1:-2]): (r[-2], r[-1]) for r in rows}


async def test_counts_per_cell_and_metric_follow_the_window_and_its_closed_end(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    assert by_cell(await fetch(engine, score_counts(since=SINCE, until=NOW)), ids) == LEFT_CLOSED
    right = score_counts(since=SINCE, until=NOW, closed="right")
    assert by_cell(await fetch(engine, right), ids) == RIGHT_CLOSED
    assert by_cell(await fetch(engine, score_counts(since=SINCE)), ids) == OPEN_ENDED
    everything = by_cell(await fetch(engine, score_counts()), ids)
    assert everything == {**OPEN_ENDED, (C, ANSWERED): (1, 1), (C, SCRIPT): (1, 1)}


async def test_cell_and_metric_filters_narrow_and_an_empty_list_selects_nothing(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    only_b = await fetch(engine, score_counts(since=SINCE, until=NOW, cells=[B]))
    assert by_cell(only_b, ids) == {(B, ANSWERED): (4, 2), (B, SCRIPT): (4, 2)}
    one = await fetch(engine, score_counts(since=SINCE, until=NOW, target_ids=[ids[A]], metrics=[ANSWERED]))
    assert one == [(ids[A], ANSWERED, 24, 0)]
    assert await fetch(engine, score_counts(cells=[])) == []
    assert await fetch(engine, score_counts(metrics=["no_such_metric"])) == []


async def test_counts_per_probe_version(engine: AsyncEngine, ids: dict[str, int]) -> None:
    rows = await fetch(engine, score_counts(since=SINCE, until=NOW, by_probe=True))
    probes = await probe_pks(engine)
    p0, p1 = probes["p0"], probes["p1"]
    assert by_cell(rows, ids) == {
        (A, ANSWERED, p0): (12, 0),
        (A, SCRIPT, p0): (12, 3),
        (A, ANSWERED, p1): (12, 0),
        (A, SCRIPT, p1): (12, 2),
        (B, ANSWERED, p0): (4, 2),
        (B, SCRIPT, p0): (4, 2),
    }


async def test_counts_per_session_keep_runs_without_one_as_their_own_group(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    rows = await fetch(engine, score_counts(since=SINCE, until=NOW, closed="right", by_session=True))
    assert by_cell(rows, ids) == {
        (A, ANSWERED, None): (22, 0),
        (A, SCRIPT, None): (22, 4),
        (B, ANSWERED, "s0"): (2, 0),
        (B, ANSWERED, "s1"): (2, 2),
        (B, ANSWERED, None): (1, 1),
        (B, SCRIPT, "s0"): (2, 0),
        (B, SCRIPT, "s1"): (2, 2),
        (B, SCRIPT, None): (1, 0),
    }


async def test_calendar_buckets_cut_utc_hours_and_minutes(engine: AsyncEngine, ids: dict[str, int]) -> None:
    hours = await fetch(engine, score_counts(since=SINCE, until=NOW, buckets=CalendarBuckets("hour")))
    assert by_cell(hours, ids) == {
        (A, ANSWERED, H10): (12, 0),
        (A, SCRIPT, H10): (12, 1),
        (A, ANSWERED, H11): (12, 0),
        (A, SCRIPT, H11): (12, 4),
        (B, ANSWERED, H11): (4, 2),
        (B, SCRIPT, H11): (4, 2),
    }
    minutes = by_cell(
        await fetch(engine, score_counts(since=SINCE, until=NOW, buckets=CalendarBuckets("minute"))), ids
    )
    assert minutes[(A, SCRIPT, H11 + timedelta(minutes=30))] == (2, 1)  # p0 failing, p1 passing
    assert minutes[(B, SCRIPT, H11 + timedelta(minutes=45))] == (1, 1)
    assert len({k[2] for k in minutes}) == 12 + 2  # A's twelve minutes, and B's 11:15 and 11:45
    # The session's time zone does not move the cut (date_trunc in UTC, not in the session's zone).
    async with engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
        query = score_counts(since=SINCE, until=NOW, buckets=CalendarBuckets("hour"))
        assert by_cell([tuple(r) for r in (await conn.execute(query)).all()], ids) == by_cell(hours, ids)


async def test_age_buckets_count_back_from_now(engine: AsyncEngine, ids: dict[str, int]) -> None:
    query = score_counts(
        since=SINCE, until=NOW, closed="right", metrics=[SCRIPT], buckets=AgeBuckets(NOW, 1800.0)
    )
    assert by_cell(await fetch(engine, query), ids) == {
        (A, SCRIPT, 0): (4, 2),  # (11:30, 12:00]: 11:40, 11:50
        (A, SCRIPT, 1): (6, 1),  # (11:00, 11:30]: 11:10, 11:20, 11:30
        (A, SCRIPT, 2): (6, 1),  # (10:30, 11:00]: 10:40, 10:50, 11:00
        (A, SCRIPT, 3): (6, 0),  # (10:00, 10:30]
        (B, SCRIPT, 0): (2, 1),  # 11:45 (s1), 12:00
        (B, SCRIPT, 1): (2, 1),  # 11:15 (s1), 11:30
        (B, SCRIPT, 2): (1, 0),  # 11:00
    }


async def test_run_counts_hold_request_errors_and_leave_out_cancelled_runs(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    rows = await fetch(engine, run_counts(since=SINCE, until=NOW))
    assert sorted(rows) == sorted([(ids[A], 25, 1), (ids[B], 4, 0)])
    hours = await fetch(
        engine, run_counts(since=SINCE, until=NOW, cells=[A], buckets=CalendarBuckets("hour"))
    )
    assert sorted(hours) == [(ids[A], H10, 12, 0), (ids[A], H11, 13, 1)]
    assert await fetch(engine, run_counts(cells=[])) == []


# --- every reader of the counts agrees on the seed -------------------------------------------


async def test_detection_streams_probes_and_sessions_read_the_right_closed_window(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    spec = DetectionSpec(history_s=7200.0, baseline_s=3600.0, session_permutations=99)
    await observations.refresh(engine)  # what detect() does first
    async with engine.connect() as conn:
        names = await queries.targets(conn)
        streams = {(s.target_id, s.metric): s for s in await queries.streams(conn, names, spec, NOW)}
        per_probe = await queries.per_probe(conn, SINCE, NOW)
        candidate = Candidate(
            ids[B], B, SCRIPT, "self", 0.0, 0.0, 1.0, 0.0, Counts(), Counts(), (0.0, 0.0), None
        )
        sessions, _ = await session_breakdown(conn, candidate, SINCE, NOW, spec, np.random.default_rng(0))
    a = streams[(ids[A], SCRIPT)]
    assert a.at.tolist() == sorted(a.at.tolist())  # oldest first
    totals = {
        (cell, metric): (
            int(streams[(ids[cell], metric)].runs.sum()),
            int(streams[(ids[cell], metric)].failures.sum()),
        )
        for cell, metric in RIGHT_CLOSED
    }
    assert totals == RIGHT_CLOSED
    errors = streams[(ids[A], queries.AVAILABILITY)]
    # 22 scored runs after 10:00 and the timeout; the cancelled run is neither
    assert (int(errors.runs.sum()), int(errors.failures.sum())) == (23, 1)
    probes = await probe_pks(engine)
    assert per_probe[(ids[A], SCRIPT)] == {probes["p0"]: Counts(3, 11), probes["p1"]: Counts(1, 11)}
    assert per_probe[(ids[B], ANSWERED)] == {probes["p0"]: Counts(3, 5)}
    assert sessions["sessions"] == {"s0": {"failures": 0, "n": 2}, "s1": {"failures": 2, "n": 2}}


async def test_verdict_samples_sum_each_side_over_the_left_closed_window(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    async with engine.connect() as conn:
        samples = {s.metric: s for s in await collect_samples(conn, [A, C], [B], SINCE, NOW)}
    for metric in (ANSWERED, SCRIPT):
        (cn, cf), (bn, bf) = LEFT_CLOSED[(A, metric)], LEFT_CLOSED[(B, metric)]
        assert samples[metric] == MetricSamples(metric, cf, cn, bf, bn)
    assert samples[REQUEST_ERRORS] == MetricSamples(REQUEST_ERRORS, 1, 25, 0, 4)


async def test_the_api_reports_the_open_ended_window(engine: AsyncEngine, ids: dict[str, int]) -> None:
    ctx = ApiContext(engine, ServiceMetrics(), [A, B, C], VerdictPolicy(), clock=lambda: NOW)
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://canary") as client:
        rows = (await client.get("/api/results", params={"window_s": 7200})).json()
        one = (
            await client.get("/api/results", params={"window_s": 7200, "cell": B, "metric": ANSWERED})
        ).json()
    assert {(r["cell"], r["metric"]): (r["n"], r["failures"]) for r in rows} == OPEN_ENDED
    assert [(r["cell"], r["metric"]) for r in rows] == sorted(OPEN_ENDED)
    assert one == [{"cell": B, "metric": ANSWERED, "n": 5, "failures": 3, "pass_rate": 0.4}]


async def test_rollups_store_the_left_closed_counts_per_hour_and_minute(
    engine: AsyncEngine, ids: dict[str, int]
) -> None:
    await refresh_rollups(engine, SINCE, until=NOW)
    for grain in ("hour", "minute"):
        stored = await fetch(
            engine, sa.text(f"SELECT target_id, metric, {grain}, runs, failures FROM score_rollup_{grain}")
        )
        counted = await fetch(engine, score_counts(since=SINCE, until=NOW, buckets=CalendarBuckets(grain)))
        assert sorted(stored) == sorted(counted)
        totals: dict[tuple[str, str], tuple[int, int]] = {}
        for (cell, metric, _), (n, f) in by_cell(stored, ids).items():
            n0, f0 = totals.get((cell, metric), (0, 0))
            totals[(cell, metric)] = (n0 + n, f0 + f)
        assert totals == LEFT_CLOSED
    runs = await fetch(engine, sa.text("SELECT target_id, hour, runs, errors FROM run_rollup_hour"))
    assert sorted(runs) == sorted(
        await fetch(engine, run_counts(since=SINCE, until=NOW, buckets=CalendarBuckets("hour")))
    )
