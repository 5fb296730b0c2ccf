"""What the API refuses before any route sees a request: oversized bodies, NUL bytes, huge echoes.

:class:`RequestLimits` is a raw ASGI middleware, outermost but for Starlette's error handler, so
it acts before authentication and before FastAPI reads the body (FastAPI parses a body before it
runs a route's dependencies, the bearer check included):

- a declared ``Content-Length`` over ``max_body_bytes`` is a 413 at once, without reading a byte;
- a body streamed without one (chunked) is counted as it arrives and cut off with a 413 as soon
  as it passes the limit, so it never sits in memory whole;
- a NUL byte in the path or a query parameter is a 422 in FastAPI's validation shape
  (PostgreSQL text cannot hold NUL: psycopg would raise and the client would see a 500).

:func:`validation_error` answers a 422 without echoing more than ``ECHO_CHARS`` of any input
(nor more than ``MSG_CHARS`` of a message).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 1 << 20  # a deploy registration is a few hundred bytes
ECHO_CHARS = 200  # of an invalid input quoted back in a 422
MSG_CHARS = 1000  # of an error message (ours quote the pattern that matched nothing)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def nul_locations(scope: Scope) -> list[list[str]]:
    """Where a request has NUL bytes: ``["path"]`` and ``["query", name]`` locations."""
    found: list[list[str]] = []
    if "\x00" in scope.get("path", "") or "\x00" in unquote(scope.get("raw_path", b"").decode("latin-1")):
        found.append(["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            found.append(["query", name.replace("\x00", "")])
    return found


async def send_json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class RequestLimits:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if locations := nul_locations(scope):
            errors = [
                {"loc": loc, "msg": "NUL bytes are not allowed", "type": "value_error"} for loc in locations
            ]
            await send_json(send, 422, {"detail": errors})
            return
        too_large = {"detail": f"request body larger than {self.max_body_bytes} bytes"}
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_json(send, 413, too_large)
            return
        received = 0
        started = rejected = False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 now and tell the app the client left, so it stops reading
            # (raising instead would reach FastAPI's body parser, which turns any error into a 400).
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    rejected = True
                    if not started:
                        await send_json(send, 413, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 was the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, watching_send)


def truncated(value: Any, limit: int = ECHO_CHARS) -> Any:
    """``value`` as JSON, with any string (or a container's JSON) over ``limit`` cut short."""
    value = jsonable_encoder(value)
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"
    if isinstance(value, list | dict):
        text = json.dumps(value)
        return value if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
    return value


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body (``{"detail": [errors]}``) with every echoed ``input`` truncated."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        shown = dict(error)
        shown["msg"] = truncated(str(shown.get("msg", "")), MSG_CHARS)  # a message may quote its input
        if "input" in shown:
            shown["input"] = truncated(shown["input"])
        if "ctx" in shown and len(json.dumps(jsonable_encoder(shown["ctx"]))) > ECHO_CHARS:
            del shown["ctx"]  # it may quote the input too; the schema wants an object, so no excerpt
        errors.append(jsonable_encoder(shown))
    return JSONResponse({"detail": errors}, status_code=422)
