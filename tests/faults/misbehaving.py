"""Misbehaving upstreams on loopback: raw ASGI apps, so each can break HTTP the way a real
server does (dripping a body byte by byte, echoing credentials, answering 429 then 200)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.upstream import SERVED_BY, chat_body

Scope = dict[str, Any]

# One probe sent three times, scored only on whether it was answered: what the fault tests send.
REPEAT = 3
ONE_PROBE = f"""
[defaults]
scorers = ["answered"]

[[probe]]
id = "capital"
prompt = "Capital of France?"
reference_answer = "Paris"
repeat = {REPEAT}
"""


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def send_json(send: Any, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class DripUpstream:
    """Answers a valid chat body, one byte every ``interval_s`` (each socket read is quick)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        data = json.dumps(chat_body("drip", False, 0)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.Event()

        async def watch() -> None:  # stop dripping once the client hangs up (or the server stops)
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        for i in range(len(data)):
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": data[i : i + 1], "more_body": True})
            await asyncio.sleep(self.interval_s)
        watcher.cancel()


class FixedUpstream:
    """Answers every request with one status and JSON payload."""

    def __init__(self, status: int, payload: Any) -> None:
        self.status = status
        self.payload = payload

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send_json(send, self.status, self.payload)


class EchoHeadersUpstream:
    """Answers 401 with a body that echoes every request header, as some gateways do."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        error = {"error": {"type": "auth", "request_headers": headers}, "detail": str(headers)}
        await send_json(send, 401, error, {**SERVED_BY, "x-served-replica": headers.get("authorization", "")})


class RateLimitOnceUpstream:
    """The first request gets 429 with ``retry-after``; later ones 200. Arrival times are kept."""

    def __init__(self, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s
        self.arrivals: list[float] = []  # time.monotonic() of each request's arrival
        self.limited_at: float | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        self.arrivals.append(time.monotonic())
        if self.limited_at is None:
            self.limited_at = time.monotonic()
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            await send_json(send, 429, error, {"retry-after": str(self.retry_after_s)})
            return
        await send_json(send, 200, chat_body("ok", False, 0), SERVED_BY)
