"""OpenAI-compatible chat completions (OpenAI, vLLM, SGLang, TGI, llama.cpp server).

``base_url`` ends in ``/v1``; the request goes to ``{base_url}/chat/completions``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from canary.config.loader import Target
from canary.config.secrets import reveal
from canary.probing.completion import Completion, ProbeRequest, TokenLogprob
from canary.probing.providers.base import Provider, SchemaError


class _TopLogprob(BaseModel):
    token: str
    logprob: float


class _TokenLogprob(_TopLogprob):
    top_logprobs: list[_TopLogprob] = []


class _Logprobs(BaseModel):
    content: list[_TokenLogprob] | None = None


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ChatResponse(BaseModel):
    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


def bearer_headers(target: Target) -> dict[str, str]:
    key = reveal(target.api_key)
    return {"authorization": f"Bearer {key}"} if key else {}


def sampling_fields(request: ProbeRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k  # a vLLM/SGLang extension; OpenAI ignores unknown sampling keys
    if request.stop:
        body["stop"] = list(request.stop)
    return body


class OpenAIChatProvider(Provider):
    kind = "openai-chat"

    def url(self, target: Target, request: ProbeRequest) -> str:
        return f"{target.spec.base_url}/chat/completions"

    def headers(self, target: Target) -> dict[str, str]:
        return bearer_headers(target)

    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.extend({"role": m.role, "content": m.content} for m in request.chat_messages)
        body = {"model": target.spec.model_id, "messages": messages, **sampling_fields(request)}
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        return body

    def parse(self, data: Any, completion: Completion) -> None:
        parsed = _ChatResponse.model_validate(data)
        if not parsed.choices:
            raise ValueError("no choices")
        choice = parsed.choices[0]
        if choice.message.content is None:
            # No text at all (a tool call, a refusal, a server bug) is not an answer to score.
            raise SchemaError("choices[0].message.content is null")
        completion.text = choice.message.content
        completion.finish_reason = choice.finish_reason
        completion.response_model = parsed.model
        if parsed.usage:
            completion.input_tokens = parsed.usage.prompt_tokens
            completion.output_tokens = parsed.usage.completion_tokens
        if choice.logprobs and choice.logprobs.content is not None:
            completion.tokens = [
                TokenLogprob(t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs))
                for t in choice.logprobs.content
            ]
