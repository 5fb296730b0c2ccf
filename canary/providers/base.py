"""The provider interface and the HTTP handling every provider shares.

A provider turns a :class:`ProbeRequest` into one HTTP call and the answer into a
:class:`Completion`. Nothing a server does — a timeout, a 429, a 5xx, a dropped connection,
a body that is not JSON or not the documented shape — raises out of :meth:`Provider.complete`;
each becomes a failed Completion with a :class:`FailureReason`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import ValidationError

from canary.completion import Completion, ProbeRequest
from canary.config import Target
from canary.errors import FailureReason

SESSION_HEADER = "x-session-key"
ERROR_SNIPPET_CHARS = 300


class SchemaError(ValueError):
    """The body is JSON but not the shape the API documents."""


class Provider(ABC):
    """One API flavour. Subclasses build the request body and parse the response body."""

    kind: ClassVar[str]

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @abstractmethod
    def url(self, target: Target, request: ProbeRequest) -> str: ...

    @abstractmethod
    def headers(self, target: Target) -> dict[str, str]:
        """Auth and API headers (secrets revealed here only, never logged)."""

    @abstractmethod
    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]: ...

    @abstractmethod
    def parse(self, data: Any, completion: Completion) -> None:
        """Fill ``completion`` from a 2xx JSON body; raise SchemaError/KeyError/TypeError if malformed."""

    def error_message(self, data: Any) -> str | None:
        """The API's own error message from an error body, when it has one."""
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return err["message"]
            if isinstance(data.get("message"), str):
                return data["message"]
        return None

    def classify_error(self, status: int, data: Any) -> FailureReason:
        """The failure reason for a non-2xx status (platforms refine throttling bodies)."""
        if status == 429:
            return FailureReason.RATE_LIMITED
        if status >= 500:
            return FailureReason.SERVER_ERROR
        return FailureReason.CLIENT_ERROR

    async def complete(self, target: Target, request: ProbeRequest) -> Completion:
        """Send one request; always returns a Completion, failed or not."""
        headers = {**target.resolved_headers(), **self.headers(target), "content-type": "application/json"}
        if request.session_key:
            headers[SESSION_HEADER] = request.session_key
        started = time.perf_counter()
        try:
            response = await self.client.post(
                self.url(target, request),
                json=self.body(target, request),
                headers=headers,
                timeout=target.timeout_s,
            )
        except httpx.TimeoutException as exc:
            return Completion.failed(
                FailureReason.TIMEOUT,
                f"{type(exc).__name__} after {target.timeout_s:g}s",
                latency_s=time.perf_counter() - started,
            )
        except httpx.TransportError as exc:
            return Completion.failed(
                FailureReason.CONNECTION,
                f"{type(exc).__name__}: {exc}"[:ERROR_SNIPPET_CHARS],
                latency_s=time.perf_counter() - started,
            )
        latency = time.perf_counter() - started
        return self.interpret(target, response, latency)

    def interpret(self, target: Target, response: httpx.Response, latency: float) -> Completion:
        served_by = served_by_from(response.headers, target.spec.served_by_headers)
        try:
            data: Any = response.json()
        except ValueError:
            data = None
        if not response.is_success:
            message = self.error_message(data) or response.text[:ERROR_SNIPPET_CHARS]
            return Completion.failed(
                self.classify_error(response.status_code, data),
                f"HTTP {response.status_code}: {message}"[:ERROR_SNIPPET_CHARS],
                http_status=response.status_code,
                latency_s=latency,
                served_by=served_by,
                retry_after_s=retry_after(response.headers),
            )
        if data is None:
            return Completion.failed(
                FailureReason.BAD_JSON,
                f"body is not JSON: {response.text[:120]!r}",
                http_status=response.status_code,
                latency_s=latency,
                served_by=served_by,
            )
        completion = Completion(
            ok=True, http_status=response.status_code, latency_s=latency, served_by=served_by
        )
        try:
            self.parse(data, completion)
        except (SchemaError, KeyError, TypeError, IndexError, ValueError, ValidationError) as exc:
            detail = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            return Completion.failed(
                FailureReason.BAD_SCHEMA,
                f"unexpected response shape: {type(exc).__name__}: {detail}"[:ERROR_SNIPPET_CHARS],
                http_status=response.status_code,
                latency_s=latency,
                served_by=served_by,
            )
        return completion


def served_by_from(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The configured served-by headers present on a response (case-insensitive)."""
    return {name.lower(): headers[name] for name in names if name in headers}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or HTTP date), if present."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
