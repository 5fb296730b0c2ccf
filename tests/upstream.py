"""A scripted upstream LLM server on loopback, speaking the three API shapes canary uses.

The ``model`` field of a request picks the behaviour, so one server serves every failure mode:
``ok`` answers properly; ``slow`` sleeps past any short timeout; ``ratelimit`` answers 429 with
``retry-after``; ``overloaded`` answers Anthropic's 529; ``error500`` a 500; ``notjson`` an HTML
page; ``badschema`` valid JSON of the wrong shape; ``echo`` answers ``echo: <the last user
message>`` (chat) or ``echo: <the prompt's last line>`` (completions), and a 500 when that
contains ``[fail]``, so a conversation's answers can be told apart. Every request is recorded
for assertions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

ANSWER = "Paris is the capital of France."
TOKENS = ["Paris", " is", " the", " capital", " of", " France", "."]
SERVED_BY = {"x-served-pool": "short-context", "x-served-replica": "short-context-1"}


def chat_body(model: str, logprobs: bool, top_n: int) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": ANSWER},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if logprobs:
        choice["logprobs"] = {
            "content": [
                {
                    "token": t,
                    "logprob": -0.01,
                    "bytes": list(t.encode()),
                    "top_logprobs": [
                        {"token": t, "logprob": -0.01, "bytes": list(t.encode())},
                        {"token": " Lyon", "logprob": -5.0, "bytes": list(b" Lyon")},
                    ][:top_n],
                }
                for t in TOKENS
            ],
            "refusal": None,
        }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 12, "completion_tokens": len(TOKENS), "total_tokens": 12 + len(TOKENS)},
    }


def completions_body(model: str, logprobs: int | None) -> dict[str, Any]:
    lp = None
    if logprobs:
        lp = {
            "tokens": TOKENS,
            "token_logprobs": [-0.01] * len(TOKENS),
            "top_logprobs": [{t: -0.01, " Lyon": -5.0} for t in TOKENS],
            "text_offset": [0] * len(TOKENS),
        }
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"text": " " + ANSWER, "index": 0, "logprobs": lp, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": len(TOKENS), "total_tokens": 9 + len(TOKENS)},
    }


def messages_body(model: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": len(TOKENS)},
    }


class ScriptedUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.handle, methods=["POST"]),
                Route("/v1/completions", self.handle, methods=["POST"]),
                Route("/v1/messages", self.handle, methods=["POST"]),
            ]
        )

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        model = body.get("model", "ok")
        anthropic = request.url.path.endswith("/messages")
        if model == "slow":
            await asyncio.sleep(2.0)
        if model == "ratelimit":
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            return JSONResponse(error, status_code=429, headers={"retry-after": "7", **SERVED_BY})
        if model == "overloaded":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return JSONResponse(error, status_code=529)
        if model == "error500":
            return JSONResponse(
                {"error": {"message": "internal error", "type": "server_error"}}, status_code=500
            )
        if model == "notjson":
            return PlainTextResponse("<html><body>502 Bad Gateway</body></html>", status_code=200)
        if model == "badschema":
            return JSONResponse({"choices": "nope", "content": 3, "type": "message"})
        if model == "echo":
            return self.echo(request.url.path, body)
        if anthropic:
            return JSONResponse(messages_body(model), headers=SERVED_BY)
        if request.url.path.endswith("/chat/completions"):
            return JSONResponse(
                chat_body(model, bool(body.get("logprobs")), body.get("top_logprobs") or 0), headers=SERVED_BY
            )
        return JSONResponse(completions_body(model, body.get("logprobs")), headers=SERVED_BY)

    @staticmethod
    def echo(path: str, body: dict[str, Any]) -> Response:
        if path.endswith("/chat/completions"):
            said = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        else:
            said = body["prompt"].rstrip().rsplit("\n", 1)[-1]
        if "[fail]" in said:
            error = {"error": {"message": "internal error", "type": "server_error"}}
            return JSONResponse(error, status_code=500)
        answer = f"echo: {said}"
        if path.endswith("/chat/completions"):
            response = chat_body("echo", False, 0)
            response["choices"][0]["message"]["content"] = answer
        else:
            response = completions_body("echo", None)
            response["choices"][0]["text"] = " " + answer
        return JSONResponse(response, headers=SERVED_BY)
