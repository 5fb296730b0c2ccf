"""The normalised request and response every provider speaks.

Providers translate a :class:`ProbeRequest` into their API's body and the API's answer into a
:class:`Completion`; scorers and storage only ever see these two types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from canary.errors import FailureReason

Role = Literal["system", "user", "assistant"]
Mode = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """One request to one cell: chat messages, or a raw prompt for completion-style endpoints."""

    mode: Mode
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    session_key: str | None = None
    stop: tuple[str, ...] = ()
    echo: bool = False  # legacy completions: score the prompt itself (prompt log-probabilities)

    @property
    def chat_messages(self) -> tuple[Message, ...]:
        """The messages a chat-style API is sent: a completion-style prompt becomes one user turn."""
        if self.mode == "completion" and self.prompt is not None and not self.messages:
            return (Message("user", self.prompt),)
        return self.messages


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token, its log-probability and the most probable alternatives at that step.

    ``top`` is ordered most probable first and, as the OpenAI API does, may include the chosen
    token itself.
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Completion:
    """A provider's answer, or the reason there is none."""

    ok: bool
    text: str = ""
    reason: FailureReason | None = None
    error: str | None = None  # human-readable, never containing a secret
    http_status: int | None = None
    latency_s: float = 0.0
    served_by: dict[str, str] = field(default_factory=dict)
    tokens: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    retry_after_s: float | None = None
    response_model: str | None = None

    @classmethod
    def failed(
        cls,
        reason: FailureReason,
        error: str,
        *,
        http_status: int | None = None,
        latency_s: float = 0.0,
        served_by: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> Completion:
        return cls(
            ok=False,
            reason=reason,
            error=error,
            http_status=http_status,
            latency_s=latency_s,
            served_by=served_by or {},
            retry_after_s=retry_after_s,
        )
