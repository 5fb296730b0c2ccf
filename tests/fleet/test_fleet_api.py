"""The fleet speaks OpenAI chat, OpenAI completions and Anthropic Messages faithfully enough
that canary's own providers use it unchanged."""

from __future__ import annotations

import asyncio

import httpx
from fleetkit import chat_body, targets_for

from canary.fleet.running import RunningFleet
from canary.probing.catalog import Catalog
from canary.probing.providers import get_provider

FRANCE = "en-capital-france"


def test_a_catalog_prompt_is_answered_with_its_reference_at_temperature_zero(
    fleet: RunningFleet, catalog: Catalog
) -> None:
    probe = catalog.by_id(FRANCE)
    r = httpx.post(
        f"{fleet.base_url}/first-party/v1/chat/completions", json=chat_body(probe.prompt, temperature=0)
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 1
    assert r.headers["x-served-platform"] == "first-party"
    assert r.headers["x-served-pool"] == "short-context"
    assert r.headers["x-served-replica"] in ("short-context-1", "short-context-2")


def test_chat_logprobs_have_the_openai_shape_and_the_chosen_token_leads_at_temperature_zero(
    fleet: RunningFleet, catalog: Catalog
) -> None:
    probe = catalog.by_id("det-count-to-twenty")
    body = chat_body(probe.prompt, temperature=0, logprobs=True, top_logprobs=5)
    data = httpx.post(f"{fleet.base_url}/cloud-a/short-context/v1/chat/completions", json=body).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert "".join(step["token"] for step in content) == data["choices"][0]["message"]["content"]
    for step in content:
        assert step["bytes"] == list(step["token"].encode())
        assert len(step["top_logprobs"]) == 5
        assert step["top_logprobs"][0]["token"] == step["token"]
        assert step["logprob"] <= 0.0
        assert [t["logprob"] for t in step["top_logprobs"]] == sorted(
            (t["logprob"] for t in step["top_logprobs"]), reverse=True
        )


def test_legacy_completions_return_logprobs_as_maps_with_text_offsets(
    fleet: RunningFleet, catalog: Catalog
) -> None:
    probe = catalog.by_id(FRANCE)
    body = {"model": "canary-large", "prompt": probe.completion_prompt, "temperature": 0, "logprobs": 3}
    data = httpx.post(f"{fleet.base_url}/cloud-b/long-context/v1/completions", json=body).json()
    choice = data["choices"][0]
    assert data["object"] == "text_completion"
    assert choice["text"].strip() == "Paris"
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"])
    assert lp["text_offset"][0] == len(probe.completion_prompt)
    assert all(len(top) == 3 for top in lp["top_logprobs"])


def test_anthropic_messages_have_the_messages_shape(fleet: RunningFleet, catalog: Catalog) -> None:
    probe = catalog.by_id(FRANCE)
    body = {
        "model": "canary-small",
        "max_tokens": 64,
        "temperature": 0,
        "messages": [{"role": "user", "content": probe.prompt}],
    }
    r = httpx.post(
        f"{fleet.base_url}/cloud-a/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    data = r.json()
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["content"] == [{"type": "text", "text": "Paris"}]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"]["output_tokens"] == 1
    assert r.headers["x-served-pool"] == "short-context"


def test_an_unknown_prompt_gets_a_plausible_generic_answer(fleet: RunningFleet) -> None:
    data = httpx.post(
        f"{fleet.base_url}/first-party/v1/chat/completions", json=chat_body("Tell me about owls.")
    ).json()
    assert len(data["choices"][0]["message"]["content"].split()) > 8


def test_max_tokens_cuts_the_answer_with_finish_reason_length(fleet: RunningFleet, catalog: Catalog) -> None:
    probe = catalog.by_id("det-count-to-twenty")
    body = chat_body(probe.prompt, temperature=0, max_tokens=3)
    data = httpx.post(f"{fleet.base_url}/first-party/v1/chat/completions", json=body).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


def test_errors_come_in_each_apis_own_format_with_the_right_status(fleet: RunningFleet) -> None:
    base = fleet.base_url
    r = httpx.post(
        f"{base}/first-party/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(
        f"{base}/first-party/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{base}/first-party/v1/chat/completions", json=chat_body("x", temperature=5))
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = httpx.post(f"{base}/nowhere/v1/chat/completions", json=chat_body("x"))
    assert r.status_code == 404 and "error" in r.json()
    headers = {"anthropic-version": "2023-06-01"}
    r = httpx.post(
        f"{base}/cloud-b/v1/messages", json={"model": "canary-small", "messages": []}, headers=headers
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    body = {"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{base}/cloud-b/v1/messages", json=body, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_models_are_listed_under_every_base(fleet: RunningFleet) -> None:
    for path in ("first-party", "cloud-b/long-context"):
        data = httpx.get(f"{fleet.base_url}/{path}/v1/models").json()
        assert [m["id"] for m in data["data"]] == ["canary-small", "canary-large"]


def test_canarys_own_providers_talk_to_the_fleet_unchanged(fleet: RunningFleet, catalog: Catalog) -> None:
    probe = catalog.by_id("det-count-to-twenty")
    cell = "canary-large/cloud-a/short-context"

    async def ask(provider_kind: str, mode: str) -> tuple[str, bool, dict[str, str]]:
        [target] = targets_for(fleet, [cell], provider_kind)
        async with httpx.AsyncClient() as client:
            completion = await get_provider(provider_kind, client).complete(target, probe.request(mode))  # type: ignore[arg-type]
        assert completion.ok, completion.error
        return completion.text, completion.tokens is not None, completion.served_by

    chat_text, chat_logprobs, served = asyncio.run(ask("openai-chat", "chat"))
    legacy_text, legacy_logprobs, _ = asyncio.run(ask("openai-completions", "completion"))
    messages_text, messages_logprobs, _ = asyncio.run(ask("anthropic", "chat"))
    assert chat_text == messages_text == probe.spec.reference_answer
    assert legacy_text.strip() == probe.spec.reference_answer.strip()
    assert chat_logprobs and legacy_logprobs and not messages_logprobs
    assert served["x-served-pool"] == "short-context"
    assert served["x-served-replica"].startswith("short-context-")
