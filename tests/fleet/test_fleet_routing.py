"""The front door routes by prompt length, misroutes a fraction under the fault, and is sticky."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from fleetkit import chat_body

from canary.fleet.running import RunningFleet

PROMPT = "What is the capital of France? Answer with one word."


async def _served(
    base: str, path: str, sessions: list[str | None], repeat: int = 1, prompt: str = PROMPT
) -> list[tuple[str | None, str, str]]:
    """(session, pool, replica) for each request, sent concurrently."""
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(session: str | None) -> tuple[str | None, str, str]:
            headers = {"x-session-key": session} if session else {}
            body = chat_body(prompt, temperature=0, max_tokens=4)
            r = await client.post(f"{base}/{path}/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200
            return session, r.headers["x-served-pool"], r.headers["x-served-replica"]

        return await asyncio.gather(*(one(s) for s in sessions for _ in range(repeat)))


def served(
    fleet: RunningFleet, path: str, sessions: list[str | None], repeat: int = 1
) -> list[tuple[str | None, str, str]]:
    return asyncio.run(_served(fleet.base_url, path, sessions, repeat))


def test_healthy_front_doors_send_short_prompts_to_the_short_context_pool(fleet: RunningFleet) -> None:
    for platform in ("first-party", "cloud-a", "cloud-b"):
        pools = {pool for _, pool, _ in served(fleet, platform, [None] * 20)}
        assert pools == {"short-context"}


def test_prompts_longer_than_the_short_window_go_to_the_long_context_pool(fleet: RunningFleet) -> None:
    long_prompt = "word " * 210_000
    [(_, pool, _)] = asyncio.run(_served(fleet.base_url, "first-party", [None], prompt=long_prompt))
    assert pool == "long-context"


def test_misrouting_is_sticky_by_session_key_and_hits_about_the_configured_fraction(
    fleet: RunningFleet,
) -> None:
    fleet.set_fault(fault="misroute", platform="first-party", fraction=0.3)
    counted_before = fleet.fleet.state.misrouted["first-party"]
    sessions: list[str | None] = [f"user-{i}" for i in range(120)]
    results = served(fleet, "first-party", sessions, repeat=3)
    per_session: dict[str | None, set[tuple[str, str]]] = {}
    for session, pool, replica in results:
        per_session.setdefault(session, set()).add((pool, replica))
    assert all(len(seen) == 1 for seen in per_session.values()), "a session changed pool or replica"
    misrouted = sum(next(iter(seen))[0] == "long-context" for seen in per_session.values())
    assert 0.15 <= misrouted / len(sessions) <= 0.45
    assert fleet.fleet.state.misrouted["first-party"] - counted_before == 3 * misrouted


def test_a_misrouted_session_stays_misrouted_when_the_fraction_grows(fleet: RunningFleet) -> None:
    sessions: list[str | None] = [f"grow-{i}" for i in range(150)]
    fleet.set_fault(fault="misroute", platform="cloud-a", fraction=0.05)
    before = {s for s, pool, _ in served(fleet, "cloud-a", sessions) if pool == "long-context"}
    fleet.set_fault(fault="misroute", platform="cloud-a", fraction=0.4)
    after = {s for s, pool, _ in served(fleet, "cloud-a", sessions) if pool == "long-context"}
    assert before <= after
    assert len(after) > len(before)


def test_without_a_session_key_each_request_draws_afresh(fleet: RunningFleet) -> None:
    fleet.set_fault(fault="misroute", platform="cloud-b", fraction=0.5)
    pools = Counter(pool for _, pool, _ in served(fleet, "cloud-b", [None] * 60))
    assert pools["long-context"] > 10 and pools["short-context"] > 10


def test_direct_pool_urls_and_other_platforms_are_never_misrouted(fleet: RunningFleet) -> None:
    fleet.set_fault(fault="misroute", platform="first-party", fraction=1.0)
    assert {p for _, p, _ in served(fleet, "first-party/short-context", [None] * 20)} == {"short-context"}
    assert {p for _, p, _ in served(fleet, "cloud-a", [None] * 20)} == {"short-context"}
    assert {p for _, p, _ in served(fleet, "first-party", [None] * 5)} == {"long-context"}


def test_requests_without_a_session_spread_over_both_replicas(fleet: RunningFleet) -> None:
    replicas = Counter(r for _, _, r in served(fleet, "cloud-a/long-context", [None] * 40))
    assert set(replicas) == {"long-context-1", "long-context-2"}
