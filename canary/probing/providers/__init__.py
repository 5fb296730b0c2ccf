"""Providers by kind: one module per API, one normalised :class:`~canary.probing.completion.Completion`.

Cloud platforms whose SDKs are optional dependencies are imported only when a target uses them.
"""

from __future__ import annotations

import importlib

import httpx

from canary.probing.providers.anthropic import AnthropicProvider
from canary.probing.providers.base import Provider
from canary.probing.providers.openai_chat import OpenAIChatProvider
from canary.probing.providers.openai_completions import OpenAICompletionsProvider

PROVIDERS: dict[str, type[Provider]] = {
    OpenAIChatProvider.kind: OpenAIChatProvider,
    OpenAICompletionsProvider.kind: OpenAICompletionsProvider,
    AnthropicProvider.kind: AnthropicProvider,
}
# kind -> "module:Class", imported on first use because their SDKs are optional extras
LAZY_PROVIDERS: dict[str, str] = {
    "bedrock": "canary.probing.providers.bedrock:BedrockProvider",
    "vertex": "canary.probing.providers.vertex:VertexProvider",
}


def provider_class(kind: str) -> type[Provider]:
    if kind in PROVIDERS:
        return PROVIDERS[kind]
    if kind in LAZY_PROVIDERS:
        module_name, _, class_name = LAZY_PROVIDERS[kind].partition(":")
        cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
        PROVIDERS[kind] = cls
        return cls
    raise KeyError(f"unknown provider kind {kind!r}")


def get_provider(kind: str, client: httpx.AsyncClient) -> Provider:
    return provider_class(kind)(client)


__all__ = ["PROVIDERS", "Provider", "get_provider", "provider_class"]
