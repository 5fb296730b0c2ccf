"""The result backlog against a real PostgreSQL: exactly once after an ambiguous commit, a spool
that survives a restart, memory then file, a bound that drops whole passes, counted, and group
commit of passes that end together (once each, a refusal to its own caller, an outage queued)."""

from __future__ import annotations

import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.errors import FailureReason
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring.base import Score
from canary.storage.backlog import ResultBacklog
from canary.storage.engine import async_engine
from canary.storage.spool import Batch, decode, encode, run_to_json
from canary.storage.writes import RunResult, write_results
from tests.seeding import add_cells, add_probes

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# Nothing listens there: every connection attempt is refused at once, like a stopped server.
DEAD_URL = "postgresql+psycopg://canary@127.0.0.1:9/canary"


def a_pass(target_id: int, probe_pk: int, runs: int, start: datetime = T0) -> list[RunResult]:
    pass_id = uuid.uuid4()
    completion = Completion(
        ok=True, text="Paris", latency_s=0.1, served_by={"x-pool": "a"}, finish_reason="stop"
    )
    return [
        RunResult(pass_id, target_id, probe_pk, start + timedelta(seconds=i), completion,
                  [Score("answered", True, 1.0, {"n": i})], repeat_index=i)
        for i in range(runs)
    ]  # fmt: skip


async def stored(engine: AsyncEngine) -> list[tuple[uuid.UUID, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT pass_id, repeat_index FROM runs ORDER BY id"))
        scores = await conn.scalar(sa.text("SELECT count(*) FROM scores"))
    result = [(p, i) for p, i in rows.all()]
    assert scores == len(result)  # every run with its score, none twice
    return result


async def cell(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.begin() as conn:
        (tid,) = (await add_cells(conn, ["m/p/a"])).values()
        (pk,) = await add_probes(conn, 1)
    return tid, pk


def test_a_run_survives_the_spool_encoding_unchanged() -> None:
    completion = Completion(
        ok=False, reason=FailureReason.SCORING_ERROR, error="scoring failed", http_status=200, latency_s=0.25,
        tokens=[TokenLogprob("Paris", -0.01, (("Paris", -0.01), (" Lyon", -5.0)))], input_tokens=3,
        output_tokens=1, retry_after_s=2.0, response_model="m-1",
    )  # fmt: skip
    run = RunResult(uuid.uuid4(), 3, 4, T0, completion, [Score("routing", False, None, {"why": "x"})],
                    repeat_index=2, session_key="s-1", deploy_id="d", served_pool="a",
                    establishes_reference=True)  # fmt: skip
    (back,) = decode(encode(Batch([run], 123.5))).runs
    assert back == run
    encoded = run_to_json(run)  # a field added later must be spooled too, or an outage loses it
    assert set(encoded) == {f.name for f in fields(RunResult)}
    assert set(encoded["completion"]) == {f.name for f in fields(Completion)}


async def test_a_batch_retried_after_an_ambiguous_commit_is_stored_once(engine: AsyncEngine) -> None:
    tid, pk = await cell(engine)
    runs = a_pass(tid, pk, 5)
    async with engine.begin() as conn:  # the commit went through, but its answer was lost
        await write_results(conn, runs[:5])
    backlog = ResultBacklog(engine, None)
    backlog.memory.append(Batch(runs, time.time()))  # so the batch is queued again, as store() does then
    backlog.in_memory = 5
    later = a_pass(tid, pk, 2, T0 + timedelta(minutes=1))
    await backlog.store(later)  # queued behind: order is kept
    assert backlog.runs == 7
    assert await backlog.drain(10)
    assert not backlog.dropped  # the retry itself found its runs stored (checked below)
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for r in runs + later]


async def test_results_spill_to_the_file_and_a_restarted_backlog_writes_them_in_order(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    tid, pk = await cell(engine)
    passes = [a_pass(tid, pk, 3, T0 + timedelta(minutes=m)) for m in range(4)]
    dead = async_engine(DEAD_URL)
    outage = ResultBacklog(engine, tmp_path / "spool", memory_runs=6)  # the spool of this database
    outage.engine = dead  # which is now down
    for runs in passes:
        await outage.store(runs)
    assert outage.runs == 12 and outage.in_memory == 6 and outage.spooled_bytes > 0  # two passes each
    assert not await outage.drain(0.5)
    outage.close()  # a shutdown while the database is still away: memory goes to the file too
    await dead.dispose()

    elsewhere = ResultBacklog(dead, tmp_path / "spool")
    assert elsewhere.runs == 0  # another database never sees these runs (their ids are not its own)
    elsewhere.close()
    restarted = ResultBacklog(engine, tmp_path / "spool")
    assert restarted.runs == 12
    assert await restarted.drain(10)
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for runs in passes for r in runs]
    assert restarted.spool is not None and restarted.spool.path.stat().st_size == 0
    restarted.close()
    assert not list((tmp_path / "spool").iterdir())  # nothing left behind once written


async def test_past_the_bound_whole_passes_are_dropped_counted_and_logged(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    tid, pk = await cell(engine)
    now = [1000.0]
    drops: list[tuple[str, int]] = []
    dead = async_engine(DEAD_URL)
    backlog = ResultBacklog(dead, None, bound_s=60, clock=lambda: now[0], on_drop=lambda *d: drops.append(d))
    old = a_pass(tid, pk, 4)
    await backlog.store(old[:2])
    now[0] += 50
    await backlog.store(old[2:])  # the same pass's second batch, younger
    recent = a_pass(tid, pk, 3, T0 + timedelta(minutes=2))
    await backlog.store(recent)
    now[0] += 20  # the first batch is now 70 s old
    backlog.engine = engine  # the database is back
    assert await backlog.drain(10)
    await dead.dispose()
    assert drops == [("expired", 2), ("expired", 2)]  # the pass's younger half went with it
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for r in recent]
    assert "dropped 4 results (expired)" in caplog.text  # one line for the sweep


async def test_a_batch_the_database_refuses_is_dropped_alone_and_the_others_are_written(
    engine: AsyncEngine,
) -> None:
    tid, pk = await cell(engine)
    drops: list[tuple[str, int]] = []
    backlog = ResultBacklog(engine, None, on_drop=lambda *d: drops.append(d))
    good, later = a_pass(tid, pk, 2, T0), a_pass(tid, pk, 2, T0 + timedelta(minutes=2))
    bad = a_pass(tid + 1000, pk, 2, T0 + timedelta(minutes=1))  # no such cell: a foreign key refuses it
    for runs in (good, bad, later):
        backlog.memory.append(Batch(runs, time.time()))  # queued during an outage
        backlog.in_memory += len(runs)
    assert await backlog.drain(10)
    assert drops == [("rejected", 2)]
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for r in good + later]


def count_commits(engine: AsyncEngine) -> list[int]:
    """A counter of the transactions ``engine`` commits from now on."""
    commits = [0]

    def on_commit(conn: sa.Connection) -> None:
        commits[0] += 1

    sa.event.listen(engine.sync_engine, "commit", on_commit)
    return commits


async def store_all_while_the_writer_is_busy(
    backlog: ResultBacklog, passes: list[list[RunResult]]
) -> dict[int, Exception]:
    """Start ``store`` for every pass while the test holds the only writer, then let it go.

    Returns each caller's exception by pass index. Every store has joined the open group (all
    blocked) before the writer is released, so the grouping is deterministic.
    """
    errors: dict[int, Exception] = {}

    async def store(index: int) -> None:
        try:
            await backlog.store(passes[index])
        except sa.exc.IntegrityError as exc:
            errors[index] = exc

    await backlog.writers.acquire()
    async with anyio.create_task_group() as tg:
        for index in range(len(passes)):
            tg.start_soon(store, index)
        await anyio.wait_all_tasks_blocked()
        backlog.writers.release()
    return errors


async def test_passes_stored_together_are_each_stored_once_whole_in_fewer_transactions(
    engine: AsyncEngine,
) -> None:
    tid, pk = await cell(engine)
    passes = [a_pass(tid, pk, 3, T0 + timedelta(minutes=m)) for m in range(50)]
    backlog = ResultBacklog(engine, None, max_writers=1)
    commits = count_commits(engine)
    async with anyio.create_task_group() as tg:  # started together, as passes of many cells end
        for runs in passes:
            tg.start_soon(backlog.store, runs)
    assert 1 <= commits[0] < len(passes)
    expected = [(r.pass_id, r.repeat_index) for runs in passes for r in runs]
    assert sorted(await stored(engine)) == sorted(expected)
    assert backlog.runs == 0 and not backlog.dropped


async def test_a_refused_batch_in_a_group_raises_to_its_caller_only_and_the_others_are_stored(
    engine: AsyncEngine,
) -> None:
    tid, pk = await cell(engine)
    passes = [a_pass(tid, pk, 2, T0 + timedelta(minutes=m)) for m in range(5)]
    passes[2] = a_pass(tid + 1000, pk, 2, T0 + timedelta(minutes=2))  # no such cell: a foreign key refuses it
    backlog = ResultBacklog(engine, None, max_writers=1)
    errors = await store_all_while_the_writer_is_busy(backlog, passes)
    assert list(errors) == [2]
    good = [runs for index, runs in enumerate(passes) if index != 2]
    expected = [(r.pass_id, r.repeat_index) for runs in good for r in runs]
    assert sorted(await stored(engine)) == sorted(expected)
    assert backlog.runs == 0


async def test_a_group_during_an_outage_queues_every_batch_in_order(engine: AsyncEngine) -> None:
    tid, pk = await cell(engine)
    passes = [a_pass(tid, pk, 2, T0 + timedelta(minutes=m)) for m in range(6)]
    dead = async_engine(DEAD_URL)
    backlog = ResultBacklog(dead, None, max_writers=1)
    assert await store_all_while_the_writer_is_busy(backlog, passes) == {}  # an outage raises nothing
    await dead.dispose()
    # The tasks joined in the order they started: the group queues them in that order.
    assert [batch.runs for batch in backlog.memory] == passes
    backlog.engine = engine  # the database is back
    assert await backlog.drain(10)
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for runs in passes for r in runs]


async def test_cancelled_callers_of_a_waiting_group_have_their_passes_stored_once(
    engine: AsyncEngine,
) -> None:
    tid, pk = await cell(engine)
    passes = [a_pass(tid, pk, 2, T0 + timedelta(minutes=m)) for m in range(4)]
    backlog = ResultBacklog(engine, None, max_writers=1)
    commits = count_commits(engine)
    await backlog.writers.acquire()
    async with anyio.create_task_group() as tg:
        for runs in passes:
            tg.start_soon(backlog.store, runs)
        await anyio.wait_all_tasks_blocked()  # one leader waiting for the writer, three followers
        tg.cancel_scope.cancel()  # the callers give up: what they handed over is still written
        backlog.writers.release()
    assert commits[0] == 1  # the whole group, in one transaction
    assert await stored(engine) == [(r.pass_id, r.repeat_index) for runs in passes for r in runs]
