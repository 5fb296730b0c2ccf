"""A provider against upstreams that break the rules: a dripped body, ``null`` JSON, no content."""

from __future__ import annotations

import time

import httpx
import pytest

from canary.config.loader import Target, build_config
from canary.errors import FailureReason
from canary.probing.completion import Completion, Message, ProbeRequest
from canary.probing.providers import get_provider
from tests.faults.misbehaving import DripUpstream, FixedUpstream
from tests.loopback import serve_in_thread
from tests.upstream import chat_body

pytestmark = pytest.mark.anyio

CHAT = ProbeRequest(mode="chat", messages=(Message("user", "Capital of France?"),), max_tokens=32)


def chat_target(base_url: str, timeout_s: float = 5.0) -> Target:
    spec = {
        "model": "m",
        "platform": "p",
        "pool": "a",
        "provider": "openai-chat",
        "base_url": base_url,
        "model_id": "ok",
        "timeout_s": timeout_s,
    }
    return build_config({"targets": [spec]}, "test.toml").targets[0]


async def complete_against(app: object, timeout_s: float = 5.0) -> tuple[Completion, float]:
    """The completion and the seconds ``complete`` took."""
    with serve_in_thread(app) as server:
        async with httpx.AsyncClient() as client:
            provider = get_provider("openai-chat", client)
            started = time.monotonic()
            c = await provider.complete(chat_target(f"{server.url}/v1", timeout_s), CHAT)
            return c, time.monotonic() - started


async def test_a_body_dripped_one_byte_at_a_time_times_out_at_timeout_s() -> None:
    # Every read gets a byte within 0.2 s, so a per-read timeout of 1 s never fires; the body
    # (~300 bytes) would take a minute. Before the fix: stored ok after the whole drip.
    c, elapsed = await complete_against(DripUpstream(interval_s=0.2), timeout_s=1.0)
    assert not c.ok and c.reason is FailureReason.TIMEOUT, c
    assert 0.9 < c.latency_s < 1.5 and elapsed < 1.5


async def test_a_json_null_body_is_bad_schema_not_bad_json() -> None:
    c, _ = await complete_against(FixedUpstream(200, None))
    assert not c.ok and c.reason is FailureReason.BAD_SCHEMA and c.http_status == 200


async def test_chat_content_null_is_bad_schema_not_an_empty_answer() -> None:
    body = chat_body("ok", False, 0)
    body["choices"][0]["message"]["content"] = None
    c, _ = await complete_against(FixedUpstream(200, body))
    assert not c.ok and c.reason is FailureReason.BAD_SCHEMA
    assert "content is null" in (c.error or "")
