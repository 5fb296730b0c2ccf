"""Session probe sets in a pass: conversations on stable keys, each turn carrying the answers so far.

The loopback upstream's ``echo`` model answers ``echo: <what it was asked>``, so every answer in
a conversation is distinct and the history a turn carries can be checked word for word.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import load_config
from canary.probing.catalog import load_catalog
from canary.probing.runner import planned_runs, run_pass
from tests.loopback import serve_in_thread
from tests.upstream import ScriptedUpstream

pytestmark = pytest.mark.anyio

TALK = """
session = true

[defaults]
scorers = ["answered"]

[[probe]]
id = "talk-1"
prompt = "Turn one."
reference_answer = "Reference one."

[[probe]]
id = "talk-2"
prompt = "Turn two."
reference_answer = "Reference two."

[[probe]]
id = "talk-3"
prompt = "Turn three."
reference_answer = "Reference three."
system = "Answer briefly."
"""

BASIC = """
[[probe]]
id = "plain"
prompt = "Say hi."
reference_answer = "Hi."
scorers = ["answered"]
"""


@pytest.fixture
def recorder() -> Iterator[tuple[ScriptedUpstream, str]]:
    upstream = ScriptedUpstream()
    with serve_in_thread(upstream.app) as server:
        yield upstream, server.url


def write_config(
    tmp_path: Path, url: str, *, provider: str, sessions: int, talk: str = TALK, model_id: str = "echo"
) -> Path:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "talk.toml").write_text(talk)
    (tmp_path / "probes" / "basic.toml").write_text(BASIC)
    (tmp_path / "canary.toml").write_text(
        f"""probes_dir = "probes"

[[targets]]
model = "m"
platform = "p"
pool = "chat"
provider = "{provider}"
base_url = "{url}/v1"
model_id = "{model_id}"
timeout_s = 5
sessions = {sessions}
"""
    )
    return tmp_path / "canary.toml"


def by_session(requests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each session key's request bodies, in the order they arrived."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        grouped[r["headers"].get("x-session-key", "")].append(r["body"])
    return grouped


async def test_a_session_set_runs_as_conversations_that_carry_the_answers_so_far(
    engine: AsyncEngine, recorder: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    upstream, url = recorder
    config = load_config(write_config(tmp_path, url, provider="openai-chat", sessions=2))
    probes = load_catalog(config.probes_dir).probes
    assert planned_runs(config.targets[0], probes) == 1 + 2 * 3
    for _ in range(2):
        summary = await run_pass(engine, config.targets, probes)
        assert summary.stored == 7 and summary.failed_runs == 0

    sessions = by_session(upstream.requests)
    talk_keys = {"canary:m/p/chat:talk:0", "canary:m/p/chat:talk:1"}
    # Two conversations, the same keys on both passes; the ordinary probe keeps its own scheme.
    assert set(sessions) == talk_keys | {"canary:m/p/chat:0"}
    prompts = ["Turn one.", "Turn two.", "Turn three."]
    for key in talk_keys:
        bodies = sessions[key]
        assert len(bodies) == 2 * 3
        for k, body in enumerate(bodies):
            turn = k % 3 + 1
            chat = [m for m in body["messages"] if m["role"] != "system"]
            assert len(chat) == 2 * turn - 1
            assert [m["role"] for m in chat] == ["user", "assistant"] * (turn - 1) + ["user"]
            assert [m["content"] for m in chat[0::2]] == prompts[:turn]
            assert [m["content"] for m in chat[1::2]] == [f"echo: {p}" for p in prompts[: turn - 1]]
            system = [m["content"] for m in body["messages"] if m["role"] == "system"]
            assert system == (["Answer briefly."] if turn == 3 else [])

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT p.probe_id, r.session_key, r.repeat_index, r.status, r.output_text "
                    "FROM runs r JOIN probes p ON p.id = r.probe_pk"
                )
            )
        ).all()
        scores = await conn.scalar(sa.text("SELECT count(*) FROM scores WHERE passed"))
    turns = [r for r in rows if r.probe_id.startswith("talk-")]
    assert len(turns) == 2 * 2 * 3 and scores == len(rows) == 14
    assert {(r.probe_id, r.session_key) for r in turns} == {
        (f"talk-{t}", key) for t in (1, 2, 3) for key in talk_keys
    }
    assert all(r.repeat_index == 0 and r.status == "ok" for r in turns)
    assert {r.output_text for r in turns if r.probe_id == "talk-2"} == {"echo: Turn two."}


async def test_a_failed_turn_is_carried_on_with_its_reference_answer(
    engine: AsyncEngine, recorder: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    upstream, url = recorder
    talk = TALK.replace('prompt = "Turn two."', 'prompt = "Turn two [fail]."')
    config = load_config(write_config(tmp_path, url, provider="openai-chat", sessions=0, talk=talk))
    summary = await run_pass(engine, config.targets, load_catalog(config.probes_dir).probes)
    assert summary.stored == 4 and summary.cells["m/p/chat"].failures == {"server_error": 1}

    [first, second, third] = by_session(upstream.requests)["canary:m/p/chat:talk:0"]
    assert [m["content"] for m in third["messages"] if m["role"] == "assistant"] == [
        "echo: Turn one.",
        "Reference two.",
    ]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT p.probe_id, r.status, r.reason, r.session_key "
                    "FROM runs r JOIN probes p ON p.id = r.probe_pk ORDER BY p.probe_id"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("plain", "ok", None, None),
        ("talk-1", "ok", None, "canary:m/p/chat:talk:0"),
        ("talk-2", "error", "server_error", "canary:m/p/chat:talk:0"),
        ("talk-3", "ok", None, "canary:m/p/chat:talk:0"),
    ]


async def test_a_completion_cell_is_sent_the_transcript_of_the_earlier_turns(
    engine: AsyncEngine, recorder: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    upstream, url = recorder
    talk = TALK.replace(
        'prompt = "Turn three."', 'prompt = "Turn three."\ncompletion_prompt = "Q: three?\\nA:"'
    )
    config = load_config(write_config(tmp_path, url, provider="openai-completions", sessions=1, talk=talk))
    summary = await run_pass(engine, config.targets, load_catalog(config.probes_dir).probes)
    assert summary.stored == 4 and summary.failed_runs == 0

    prompts = [body["prompt"] for body in by_session(upstream.requests)["canary:m/p/chat:talk:0"]]
    # Each earlier turn: its completion prompt, the model's own continuation, a blank line.
    assert prompts == [
        "Turn one.\n\n",
        "Turn one.\n\n echo: Turn one.\n\nTurn two.\n\n",
        "Turn one.\n\n echo: Turn one.\n\nTurn two.\n\n echo: Turn two.\n\nQ: three?\nA:",
    ]


async def test_a_conversation_cut_short_by_shutdown_records_its_turn_in_flight_as_cancelled(
    engine: AsyncEngine, recorder: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    _, url = recorder  # the slow model answers after 2 s: every first request is in flight
    config = load_config(write_config(tmp_path, url, provider="openai-chat", sessions=2, model_id="slow"))
    with anyio.move_on_after(0.5):
        await run_pass(engine, config.targets, load_catalog(config.probes_dir).probes)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT p.probe_id, r.reason, r.session_key "
                    "FROM runs r JOIN probes p ON p.id = r.probe_pk"
                )
            )
        ).all()
    # The turns after the first never started; nothing is stored for them.
    assert sorted(tuple(r) for r in rows) == [
        ("plain", "cancelled", "canary:m/p/chat:0"),
        ("talk-1", "cancelled", "canary:m/p/chat:talk:0"),
        ("talk-1", "cancelled", "canary:m/p/chat:talk:1"),
    ]
