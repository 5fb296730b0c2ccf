"""Anthropic Messages API (``{base_url}/v1/messages``). It returns no logprobs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from canary.config.loader import Target
from canary.config.secrets import reveal
from canary.errors import FailureReason
from canary.probing.completion import Completion, ProbeRequest
from canary.probing.providers.base import Provider

ANTHROPIC_VERSION = "2023-06-01"


class _Block(BaseModel):
    type: str
    text: str | None = None


class _Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None


class _MessageResponse(BaseModel):
    type: str
    model: str | None = None
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None


def messages_body(model_id: str, request: ProbeRequest) -> dict[str, Any]:
    """The Messages API body; shared with Bedrock and Vertex, which wrap the same schema."""
    messages = [{"role": m.role, "content": m.content} for m in request.chat_messages]
    body: dict[str, Any] = {"model": model_id, "max_tokens": request.max_tokens, "messages": messages}
    body["temperature"] = request.temperature
    if request.system:
        body["system"] = request.system
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    return body


def cloud_messages_body(request: ProbeRequest, anthropic_version: str) -> dict[str, Any]:
    """The Messages body as Bedrock and Vertex take it: the model in the URL, a platform version."""
    body = messages_body("", request)
    del body["model"]
    return {"anthropic_version": anthropic_version, **body}


def parse_message(data: Any, completion: Completion) -> None:
    parsed = _MessageResponse.model_validate(data)
    if parsed.type != "message":
        raise ValueError(f"type is {parsed.type!r}, not 'message'")
    completion.text = "".join(block.text or "" for block in parsed.content if block.type == "text")
    completion.finish_reason = parsed.stop_reason
    completion.response_model = parsed.model
    if parsed.usage:
        completion.input_tokens = parsed.usage.input_tokens
        completion.output_tokens = parsed.usage.output_tokens


class AnthropicProvider(Provider):
    kind = "anthropic"

    def url(self, target: Target, request: ProbeRequest) -> str:
        return f"{target.spec.base_url}/v1/messages"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        key = reveal(target.api_key)
        if key:
            headers["x-api-key"] = key
        return headers

    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]:
        return messages_body(target.spec.model_id, request)

    def parse(self, data: Any, completion: Completion) -> None:
        parse_message(data, completion)

    def classify_error(self, status: int, data: Any) -> FailureReason:
        # 529 overloaded_error is capacity, like a 429: never a quality failure
        if status == 529:
            return FailureReason.RATE_LIMITED
        return super().classify_error(status, data)
