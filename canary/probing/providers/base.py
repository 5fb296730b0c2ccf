"""The provider interface and the HTTP handling every provider shares.

A provider turns a :class:`ProbeRequest` into one HTTP call and the answer into a
:class:`Completion`. Nothing a server does — a timeout, a 429, a 5xx, a dropped connection,
a body that is not JSON or not the documented shape — raises out of :meth:`Provider.complete`;
each becomes a failed Completion with a :class:`FailureReason`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import anyio
import httpx
from pydantic import ValidationError

from canary.config.loader import Target
from canary.config.secrets import SENSITIVE_HEADERS, redact_configured, reveal
from canary.errors import FailureReason
from canary.probing.completion import Completion, ProbeRequest

SESSION_HEADER = "x-session-key"
ERROR_SNIPPET_CHARS = 300
NOT_JSON: Any = object()  # a body that does not parse; JSON ``null`` parses to None


class SchemaError(ValueError):
    """The body is JSON but not the shape the API documents."""


class PrepareError(Exception):
    """A request could not be built before sending: no cloud credentials, no region or project.

    :meth:`Provider.complete` turns it into a failed run with ``reason`` (the message must
    never contain a secret).
    """

    def __init__(self, message: str, reason: FailureReason = FailureReason.CLIENT_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """The exact bytes to send: platforms that sign requests (SigV4) sign these and nothing else."""

    url: str
    headers: dict[str, str]
    content: bytes


def json_bytes(body: Any) -> bytes:
    """A JSON body serialised as httpx's ``json=`` does, so the bytes sent are the bytes signed."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


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
            for message in (err.get("message") if isinstance(err, dict) else None, data.get("message")):
                if isinstance(message, str):
                    return message
        return None

    def classify_error(self, status: int, data: Any) -> FailureReason:
        """The failure reason for a non-2xx status (platforms refine throttling bodies)."""
        if status == 429:
            return FailureReason.RATE_LIMITED
        if status >= 500:
            return FailureReason.SERVER_ERROR
        return FailureReason.CLIENT_ERROR

    def classify_response(self, response: httpx.Response, data: Any) -> FailureReason:
        """Like :meth:`classify_error`, for platforms whose error type is in a header."""
        return self.classify_error(response.status_code, data)

    def describe_error(self, response: httpx.Response, data: Any) -> str | None:
        """Like :meth:`error_message`, for platforms whose error type is in a header."""
        return self.error_message(data)

    def retry_after_s(self, response: httpx.Response, data: Any) -> float | None:
        """When the server asks to be retried, from ``retry-after`` (platforms add body hints)."""
        return retry_after(response.headers)

    async def prepare(self, target: Target, request: ProbeRequest) -> PreparedRequest:
        """The URL, headers and body bytes to send; cloud platforms add auth here.

        May raise :class:`PrepareError` (missing credentials), which becomes a failed run.
        """
        headers = {**target.resolved_headers(), **self.headers(target), "content-type": "application/json"}
        if request.session_key:
            headers[SESSION_HEADER] = request.session_key
        return PreparedRequest(self.url(target, request), headers, json_bytes(self.body(target, request)))

    async def complete(self, target: Target, request: ProbeRequest) -> Completion:
        """Send one request; always returns a Completion, failed or not, with secrets redacted."""
        return redact_completion(await self._complete(target, request), target_secrets(target))

    async def _complete(self, target: Target, request: ProbeRequest) -> Completion:
        try:
            prepared = await self.prepare(target, request)
        except PrepareError as exc:
            return Completion.failed(exc.reason, str(exc)[:ERROR_SNIPPET_CHARS])
        # Latency is the server's: credential look-ups and signing happen before the clock starts.
        started = time.perf_counter()
        # httpx's timeout bounds each socket operation, so a server dripping a byte at a time
        # would hold a run open indefinitely; this deadline covers connect, headers and body.
        response: httpx.Response | None = None
        try:
            with anyio.move_on_after(target.timeout_s):
                response = await self.client.post(
                    prepared.url,
                    content=prepared.content,
                    headers=prepared.headers,
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
        if response is None:
            return Completion.failed(
                FailureReason.TIMEOUT,
                f"no complete response within {target.timeout_s:g}s",
                latency_s=latency,
            )
        return self.interpret(target, response, latency)

    def interpret(self, target: Target, response: httpx.Response, latency: float) -> Completion:
        served_by = served_by_from(response.headers, target.spec.served_by_headers)
        try:
            data: Any = response.json()
        except ValueError:
            data = NOT_JSON
        if not response.is_success:
            if data is NOT_JSON:
                data = None
            message = self.describe_error(response, data) or response.text[:ERROR_SNIPPET_CHARS]
            return Completion.failed(
                self.classify_response(response, data),
                f"HTTP {response.status_code}: {message}"[:ERROR_SNIPPET_CHARS],
                http_status=response.status_code,
                latency_s=latency,
                served_by=served_by,
                retry_after_s=self.retry_after_s(response, data),
            )
        if data is NOT_JSON:
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


def target_secrets(target: Target) -> list[str]:
    """The target's own credentials, plain or ``env:``: its API key and credential header values."""
    values = [reveal(target.api_key) or ""]
    values.extend(
        reveal(v) or ""
        for k, v in target.headers.items()
        if k.lower() in SENSITIVE_HEADERS or not isinstance(v, str)
    )
    return [v for v in values if v]


def redact_completion(completion: Completion, secrets: list[str]) -> Completion:
    """``completion`` with credentials removed from everything an upstream's text reaches.

    The error and served-by values also lose credential-header values (an upstream echoing the
    request); the answer text loses only the known secret values, since a model may rightly
    write ``Authorization: ...`` in an answer.
    """
    if completion.error:
        completion.error = redact_configured(completion.error, secrets)
    if completion.served_by:
        completion.served_by = {k: redact_configured(v, secrets) for k, v in completion.served_by.items()}
    if completion.text:
        completion.text = redact_configured(completion.text, secrets, headers=False)
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
