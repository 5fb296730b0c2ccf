"""OpenAI-compatible legacy completions, for base models (vLLM, SGLang, TGI, llama.cpp).

``base_url`` ends in ``/v1``; the request goes to ``{base_url}/completions``.

With ``echo`` (teacher-forced scoring) the body asks for ``echo`` and ``logprobs``, and the
answer's tokens begin with the prompt's own, the first without a logprob (read as 0.0). This is
the OpenAI shape vLLM and the llama.cpp server implement. The servers' native variants, which a
provider of their own could use: vLLM's ``prompt_logprobs: n`` (a list per prompt token, the
first None), SGLang's ``return_logprob`` with ``logprob_start_len: 0`` (``input_token_logprobs``
in ``meta_info``), TGI's ``decoder_input_details: true`` (``details.prefill``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from canary.config.loader import Target
from canary.probing.completion import Completion, ProbeRequest, TokenLogprob
from canary.probing.providers.base import Provider, SchemaError
from canary.probing.providers.openai_chat import bearer_headers, sampling_fields


class _Logprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None


class _Choice(BaseModel):
    text: str
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _CompletionResponse(BaseModel):
    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


class OpenAICompletionsProvider(Provider):
    kind = "openai-completions"

    def url(self, target: Target, request: ProbeRequest) -> str:
        return f"{target.spec.base_url}/completions"

    def headers(self, target: Target) -> dict[str, str]:
        return bearer_headers(target)

    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]:
        prompt = request.prompt
        if prompt is None:  # a chat-only probe sent to a base model: plain concatenation
            prompt = "\n\n".join(m.content for m in request.messages) + "\n\n"
        body = {"model": target.spec.model_id, "prompt": prompt, **sampling_fields(request)}
        if request.logprobs or request.echo:
            body["logprobs"] = max(1, request.top_logprobs)
        if request.echo:
            body["echo"] = True
        return body

    def parse(self, data: Any, completion: Completion) -> None:
        parsed = _CompletionResponse.model_validate(data)
        if not parsed.choices:
            raise ValueError("no choices")
        choice = parsed.choices[0]
        completion.text = choice.text
        completion.finish_reason = choice.finish_reason
        completion.response_model = parsed.model
        if parsed.usage:
            completion.input_tokens = parsed.usage.prompt_tokens
            completion.output_tokens = parsed.usage.completion_tokens
        lp = choice.logprobs
        if lp is not None and lp.tokens:
            if len(lp.token_logprobs) != len(lp.tokens):
                raise SchemaError("logprobs.tokens and logprobs.token_logprobs differ in length")
            tops = lp.top_logprobs or [None] * len(lp.tokens)
            completion.tokens = [
                TokenLogprob(
                    token,
                    logprob if logprob is not None else 0.0,
                    tuple(sorted((top or {}).items(), key=lambda kv: kv[1], reverse=True)),
                )
                for token, logprob, top in zip(lp.tokens, lp.token_logprobs, tops, strict=False)
            ]
