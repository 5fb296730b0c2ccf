"""Teacher-forced requests on OpenAI legacy completions: echo + logprobs out, prompt logprobs back."""

from __future__ import annotations

import httpx

from canary.config.loader import build_config
from canary.probing.audit import continuation_logprobs
from canary.probing.completion import Completion, ProbeRequest
from canary.probing.equivalence import ForcedProbe
from canary.probing.providers.openai_completions import OpenAICompletionsProvider

TABLE = {
    "model": "m",
    "platform": "p",
    "pool": "q",
    "provider": "openai-completions",
    "base_url": "http://127.0.0.1:1/v1",
    "model_id": "base",
}


def test_an_echo_request_asks_for_the_prompts_logprobs_and_reads_them_back() -> None:
    [target] = build_config({"targets": [TABLE]}, "canary.toml").targets
    provider = OpenAICompletionsProvider(httpx.AsyncClient())
    probe = ForcedProbe(id="f", prompt="Say hi.", continuation=" Hi there")
    request = ProbeRequest(mode="completion", prompt=probe.text, max_tokens=1, temperature=0.0, echo=True)
    body = provider.body(target, request)
    assert body["echo"] is True and body["logprobs"] >= 1 and body["prompt"] == probe.text
    answer = {
        "choices": [
            {
                "text": probe.text + "!",
                "logprobs": {
                    "tokens": ["Say", " hi", ".", " Hi", " there", "!"],
                    "token_logprobs": [None, -2.0, -0.5, -0.1, -0.2, -3.0],
                    "top_logprobs": [
                        None,
                        {" hi": -2.0},
                        {".": -0.5},
                        {" Hi": -0.1},
                        {" there": -0.2},
                        {"!": -3.0},
                    ],
                    "text_offset": [0, 3, 6, 7, 10, 16],
                },
            }
        ]
    }
    completion = Completion(ok=True)
    provider.parse(answer, completion)
    assert completion.tokens is not None and completion.tokens[0].logprob == 0.0  # the first has none
    assert continuation_logprobs(completion, probe) == [-0.1, -0.2]  # the generated "!" is not scored
    assert provider.body(target, ProbeRequest(mode="completion", prompt="x")).get("echo") is None
