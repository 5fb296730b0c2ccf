"""Request parsing and response bodies of the three APIs the fleet speaks.

OpenAI chat completions, OpenAI legacy completions and Anthropic Messages: each parser turns a
JSON body into a :class:`ParsedRequest` or raises :class:`ApiError`, which the server renders
in that API's own error format (OpenAI ``{"error": {...}}``, Anthropic
``{"type": "error", "error": {...}}``). Responses follow the documented shapes, including
OpenAI logprobs with ``bytes`` and ``top_logprobs``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from canary.fleet.engine import Generation, TokenInfo
from canary.fleet.vocab import tokenize

MAX_TOP_LOGPROBS = 20
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """A request the API refuses: HTTP status, message, and the offending parameter if any."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ParsedRequest:
    model: str
    prompt: str  # the text matched against the catalog
    input_text: str  # everything the model reads, for usage counts and routing
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    logprobs: int  # -1: none; n >= 0: chosen token plus n alternatives
    stop: tuple[str, ...]
    seed: int | None
    echo: bool = False  # legacy completions: return the prompt's tokens and logprobs too


def openai_error(err: ApiError) -> dict[str, Any]:
    kind = "invalid_request_error" if err.status < 500 else "server_error"
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


def anthropic_error(err: ApiError) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPES.get(err.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be a number between {low:g} and {high:g}", param=key)
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be an integer between {low} and {high}", param=key)
    return value


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or the concatenated text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    raise ApiError(400, f"'{where}' must be a string or a list of text parts", param=where)


def _stop(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 4:
        return tuple(value)
    raise ApiError(400, f"'{key}' must be a string or a list of up to 4 strings", param=key)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", param="model")
    return model


def _messages(body: dict[str, Any], roles: set[str]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in roles:
            raise ApiError(400, f"messages[{i}].role must be one of {sorted(roles)}", param=f"messages[{i}]")
        out.append((m["role"], _text(m.get("content"), f"messages[{i}].content")))
    return out


def _last_user(messages: list[tuple[str, str]]) -> str:
    return next((text for role, text in reversed(messages) if role == "user"), messages[-1][1])


def parse_chat(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    messages = _messages(body, {"system", "developer", "user", "assistant", "tool"})
    if body.get("stream"):
        raise ApiError(400, "stream is not supported by this server", param="stream")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n = 1 is supported", param="n")
    top = _integer(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise ApiError(400, "'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    max_tokens = _integer(body, "max_completion_tokens", 0, 1, 32768) or _integer(
        body, "max_tokens", 1024, 1, 32768
    )
    return ParsedRequest(
        model=model,
        prompt=_last_user(messages),
        input_text="\n".join(text for _, text in messages),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=max(0, _integer(body, "top_k", 0, -1, 100_000)),
        logprobs=top if body.get("logprobs") else -1,
        stop=_stop(body.get("stop"), "stop"),
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
    )


def parse_completions(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (batched prompts are not supported)", param="prompt")
    if body.get("stream"):
        raise ApiError(400, "stream is not supported by this server", param="stream")
    logprobs = body.get("logprobs")
    echo = bool(body.get("echo"))
    return ParsedRequest(
        model=model,
        prompt=prompt,
        input_text=prompt,
        # With echo, max_tokens = 0 scores the prompt without generating (OpenAI, vLLM).
        max_tokens=_integer(body, "max_tokens", 16, 0 if echo else 1, 32768),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=max(0, _integer(body, "top_k", 0, -1, 100_000)),
        logprobs=-1 if logprobs is None else _integer(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS),
        stop=_stop(body.get("stop"), "stop"),
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
        echo=echo,
    )


def parse_messages(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    if body.get("max_tokens") is None:
        raise ApiError(400, "max_tokens: Field required", param="max_tokens")
    messages = _messages(body, {"user", "assistant"})
    system = _text(body["system"], "system") if body.get("system") is not None else ""
    if body.get("stream"):
        raise ApiError(400, "stream is not supported by this server", param="stream")
    return ParsedRequest(
        model=model,
        prompt=_last_user(messages),
        input_text="\n".join([system, *(text for _, text in messages)]),
        max_tokens=_integer(body, "max_tokens", 1024, 1, 32768),
        temperature=_number(body, "temperature", 1.0, 0.0, 1.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 0, 100_000),
        logprobs=-1,
        stop=_stop(body.get("stop_sequences"), "stop_sequences"),
        seed=None,
    )


def _usage(prompt_tokens: int, gen: Generation) -> dict[str, int]:
    n = len(gen.tokens)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(infos: list[TokenInfo]) -> dict[str, Any]:
    content = [
        {**_entry(i.token, i.logprob), "top_logprobs": [_entry(t, lp) for t, lp in i.top]} for i in infos
    ]
    return {"content": content, "refusal": None}


def chat_response(req: ParsedRequest, gen: Generation, prompt_tokens: int) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": gen.text, "refusal": None},
        "logprobs": _chat_logprobs(gen.logprobs) if gen.logprobs is not None else None,
        "finish_reason": gen.finish_reason,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": "fp_canary_fleet",
        "choices": [choice],
        "usage": _usage(prompt_tokens, gen),
    }


def _completions_logprobs(req: ParsedRequest, gen: Generation) -> dict[str, Any] | None:
    """Legacy logprobs: the echoed prompt's tokens (the first without a logprob), then the generated ones."""
    prompt = gen.prompt_logprobs if req.echo and gen.prompt_logprobs is not None else []
    generated = gen.logprobs or []
    if gen.logprobs is None and not prompt:
        return None
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets, position = [], 0 if req.echo else len(req.prompt)
    echoed = tokenize(req.prompt) if req.echo else []
    for i, info in enumerate([*prompt, *generated]):
        token = info.token if info is not None else echoed[i]
        offsets.append(position)
        position += len(token)
        tokens.append(token)
        token_logprobs.append(None if info is None else info.logprob)
        tops.append(None if info is None else dict(info.top))
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def completions_response(req: ParsedRequest, gen: Generation, prompt_tokens: int) -> dict[str, Any]:
    text = req.prompt + gen.text if req.echo else gen.text
    logprobs = _completions_logprobs(req, gen)
    choice = {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": gen.finish_reason}
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [choice],
        "usage": _usage(prompt_tokens, gen),
    }


def messages_response(req: ParsedRequest, gen: Generation, prompt_tokens: int) -> dict[str, Any]:
    stop_sequence = next((s for s in req.stop if s in "".join(gen.tokens)), None)
    if gen.finish_reason == "length":
        stop_reason = "max_tokens"
    else:
        stop_reason = "stop_sequence" if stop_sequence else "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": gen.text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": len(gen.tokens)},
    }
