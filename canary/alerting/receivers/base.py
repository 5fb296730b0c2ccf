"""The receiver interface: one class per kind, each renders a stored notice and posts it.

A receiver never raises: :meth:`Receiver.send` returns a :class:`DeliveryResult`, so one broken
receiver cannot stop the dispatcher from serving the others (healthchecks' ``ch.notify``).

HTTP outcomes map to results as receivers document them:

- 2xx: delivered;
- 408, 425, 429, 5xx, timeouts, connection errors: transient, retried with backoff;
- any other 4xx (400 malformed, 401/403 bad credentials, 404 unknown hook): permanent, because
  sending the same request again cannot succeed, so the dispatcher stops retrying.

URLs and secrets live only in memory (resolved from ``env:NAME``); a receiver's ``repr`` and
every error message leave them out, since Slack and webhook URLs are credentials themselves.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from canary.config.receivers import ReceiverSpec
from canary.config.secrets import Secret, reveal
from canary.errors import DeliveryError

RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt achieved; ``permanent`` failures are not retried."""

    ok: bool
    http_status: int | None = None
    error: str | None = None
    permanent: bool = False
    duration_ms: float = 0.0

    @classmethod
    def from_error(cls, exc: DeliveryError, http_status: int | None, duration_ms: float) -> DeliveryResult:
        return cls(False, http_status, str(exc), exc.permanent, duration_ms)


def check_status(status: int) -> None:
    """Raise :class:`DeliveryError` for a non-2xx status, permanent unless retrying can help."""
    if 200 <= status < 300:
        return
    retryable = status >= 500 or status in RETRYABLE_STATUS
    raise DeliveryError(f"HTTP {status}", permanent=not retryable)


class Receiver(ABC):
    """Base of every receiver kind: a name, a timeout, whether it wants resolved notices."""

    kind: ClassVar[str]

    def __init__(
        self, spec: ReceiverSpec, url: Secret | str | None, secret: Secret | str | None = None
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.send_resolved = spec.send_resolved
        self._url = url
        self._secret = secret

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def render(self, notice: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The request body and extra headers for one stored notice (see :mod:`canary.alerting.incidents`)."""

    async def send(self, notice: Mapping[str, Any], client: httpx.AsyncClient) -> DeliveryResult:
        """Post one notice; every outcome, including a bug in rendering, becomes a result."""
        return await self.post(reveal(self._url) or "", notice, client)

    async def post(self, url: str, notice: Mapping[str, Any], client: httpx.AsyncClient) -> DeliveryResult:
        """Render ``notice`` and post it to ``url``: the one attempt :meth:`send` makes per URL."""
        started = time.perf_counter()
        status: int | None = None
        try:
            body, headers = self.render(notice)
            response = await client.post(
                url,
                content=body,
                headers={"content-type": "application/json", "user-agent": "canary", **headers},
                timeout=self.spec.timeout_s,
            )
            status = response.status_code
            check_status(status)
        except DeliveryError as exc:
            return DeliveryResult.from_error(exc, status, _ms(started))
        except httpx.TimeoutException:
            return DeliveryResult(
                False, None, f"timed out after {self.spec.timeout_s:g}s", False, _ms(started)
            )
        except httpx.HTTPError as exc:
            return DeliveryResult(
                False, None, _redact(f"{type(exc).__name__}: {exc}", url), False, _ms(started)
            )
        except Exception as exc:  # a rendering bug must not take the dispatcher down with it
            return DeliveryResult(
                False, None, _redact(f"{type(exc).__name__}: {exc}", url), False, _ms(started)
            )
        return DeliveryResult(True, status, None, False, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _redact(message: str, url: str) -> str:
    """Errors from httpx may quote the URL, which for Slack and webhooks is a credential."""
    return message.replace(url, "<receiver url>") if url else message
