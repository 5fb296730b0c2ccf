"""Each provider against a real loopback server: real-shaped bodies and every failure mode."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from canary.config.loader import build_config
from canary.errors import FailureReason
from canary.probing.completion import Message, ProbeRequest
from canary.probing.providers import get_provider
from tests.loopback import ThreadedServer, serve_in_thread
from tests.upstream import ANSWER, TOKENS, ScriptedUpstream

pytestmark = pytest.mark.anyio

CHAT = ProbeRequest(mode="chat", messages=(Message("user", "Capital of France?"),), max_tokens=32)
LOGPROBS = ProbeRequest(
    mode="chat", messages=(Message("user", "Capital of France?"),), logprobs=True, top_logprobs=2
)
COMPLETION = ProbeRequest(
    mode="completion", prompt="Q: Capital of France?\nA:", logprobs=True, top_logprobs=2
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ScriptedUpstream, ThreadedServer]]:
    scripted = ScriptedUpstream()
    with serve_in_thread(scripted.app) as server:
        yield scripted, server


def target(
    kind: str, base_url: str, model_id: str = "ok", timeout_s: float = 5.0, api_key: str | None = None
):  # type: ignore[no-untyped-def]
    spec = {
        "model": "m",
        "platform": "p",
        "pool": "short-context",
        "provider": kind,
        "base_url": base_url,
        "model_id": model_id,
        "timeout_s": timeout_s,
        "served_by_headers": ["x-served-pool", "x-served-replica"],
    }
    if api_key:
        spec["api_key"] = api_key
    return build_config({"targets": [spec]}, "test.toml").targets[0]


def base(kind: str, server: ThreadedServer) -> str:
    return server.url if kind == "anthropic" else f"{server.url}/v1"


async def complete(kind: str, server: ThreadedServer, model_id: str, request: ProbeRequest = CHAT, **kw):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        return await get_provider(kind, client).complete(
            target(kind, base(kind, server), model_id, **kw), request
        )


async def test_openai_chat_parses_text_usage_and_logprobs(upstream) -> None:  # type: ignore[no-untyped-def]
    _, server = upstream
    c = await complete("openai-chat", server, "ok", LOGPROBS)
    assert c.ok and c.text == ANSWER and c.finish_reason == "stop"
    assert c.output_tokens == len(TOKENS) and c.http_status == 200
    assert c.tokens is not None and [t.token for t in c.tokens] == TOKENS
    assert c.tokens[0].top[0] == ("Paris", -0.01) and c.tokens[0].top[1][0] == " Lyon"
    assert c.served_by == {"x-served-pool": "short-context", "x-served-replica": "short-context-1"}


async def test_openai_legacy_completions_parses_text_and_top_logprob_dicts(upstream) -> None:  # type: ignore[no-untyped-def]
    scripted, server = upstream
    c = await complete("openai-completions", server, "ok", COMPLETION)
    assert c.ok and c.text == " " + ANSWER
    assert c.tokens is not None and len(c.tokens) == len(TOKENS)
    assert c.tokens[1].top[0] == (" is", -0.01)  # most probable alternative first
    sent = scripted.requests[-1]
    assert sent["path"] == "/v1/completions" and sent["body"]["prompt"].startswith("Q: Capital")
    assert sent["body"]["logprobs"] == 2


async def test_anthropic_messages_sends_version_and_key_and_parses_text(upstream) -> None:  # type: ignore[no-untyped-def]
    scripted, server = upstream
    c = await complete("anthropic", server, "ok", CHAT, api_key="plain-key-for-test")
    assert c.ok and c.text == ANSWER and c.finish_reason == "end_turn" and c.input_tokens == 12
    sent = scripted.requests[-1]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["headers"]["x-api-key"] == "plain-key-for-test"
    assert sent["body"]["messages"] == [{"role": "user", "content": "Capital of France?"}]


async def test_session_key_is_sent_as_a_header(upstream) -> None:  # type: ignore[no-untyped-def]
    scripted, server = upstream
    request = ProbeRequest(mode="chat", messages=(Message("user", "hi"),), session_key="sess-42")
    await complete("openai-chat", server, "ok", request)
    assert scripted.requests[-1]["headers"]["x-session-key"] == "sess-42"


@pytest.mark.parametrize("kind", ["openai-chat", "openai-completions", "anthropic"])
@pytest.mark.parametrize(
    ("model_id", "reason", "status"),
    [
        ("ratelimit", FailureReason.RATE_LIMITED, 429),
        ("error500", FailureReason.SERVER_ERROR, 500),
        ("notjson", FailureReason.BAD_JSON, 200),
        ("badschema", FailureReason.BAD_SCHEMA, 200),
    ],
)
async def test_server_failures_become_failed_runs_with_reasons(
    upstream, kind, model_id, reason, status
) -> None:  # type: ignore[no-untyped-def]
    _, server = upstream
    c = await complete(kind, server, model_id, COMPLETION if kind == "openai-completions" else CHAT)
    assert not c.ok and c.reason is reason and c.http_status == status
    assert c.error


async def test_rate_limit_records_retry_after_and_served_by(upstream) -> None:  # type: ignore[no-untyped-def]
    _, server = upstream
    c = await complete("openai-chat", server, "ratelimit")
    assert c.retry_after_s == 7.0
    assert c.served_by["x-served-pool"] == "short-context"
    assert "Rate limit reached" in (c.error or "")


async def test_anthropic_overloaded_529_is_capacity_not_quality(upstream) -> None:  # type: ignore[no-untyped-def]
    _, server = upstream
    c = await complete("anthropic", server, "overloaded")
    assert c.reason is FailureReason.RATE_LIMITED and c.http_status == 529 and "Overloaded" in (c.error or "")


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic"])
async def test_timeout_becomes_a_failed_run(upstream, kind) -> None:  # type: ignore[no-untyped-def]
    _, server = upstream
    c = await complete(kind, server, "slow", timeout_s=0.3)
    assert not c.ok and c.reason is FailureReason.TIMEOUT
    assert 0.25 < c.latency_s < 1.9


async def test_refused_connection_becomes_a_failed_run() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with httpx.AsyncClient() as client:
        t = target("openai-chat", f"http://127.0.0.1:{port}/v1")
        c = await get_provider("openai-chat", client).complete(t, CHAT)
    assert not c.ok and c.reason is FailureReason.CONNECTION


def test_a_completion_style_prompt_reaches_every_chat_api_as_one_user_turn() -> None:
    from canary.probing.providers.anthropic import messages_body
    from canary.probing.providers.bedrock import converse_body
    from canary.probing.providers.vertex import gemini_body

    prompt = COMPLETION.prompt
    assert COMPLETION.chat_messages == (Message("user", str(prompt)),)
    assert CHAT.chat_messages == CHAT.messages
    assert messages_body("m", COMPLETION)["messages"] == [{"role": "user", "content": prompt}]
    assert converse_body(COMPLETION)["messages"] == [{"role": "user", "content": [{"text": prompt}]}]
    assert gemini_body(COMPLETION)["contents"] == [{"role": "user", "parts": [{"text": prompt}]}]
