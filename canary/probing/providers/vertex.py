"""Google Vertex AI: Anthropic models through ``rawPredict`` and Gemini through ``generateContent``.

``POST {endpoint}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict``
takes the Anthropic Messages body with ``anthropic_version: "vertex-2023-10-16"`` and no ``model``;
``…/publishers/google/models/{model}:generateContent`` takes Gemini's ``contents`` body and, when the
probe asks, returns per-token logprobs with the top alternatives (``logprobsResult``). The endpoint
is ``https://{region}-aiplatform.googleapis.com`` (``https://aiplatform.googleapis.com`` for region
``global``) unless the target sets ``base_url``.

Auth is OAuth 2 from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
ADC file, the metadata server), looked up once per provider and refreshed when expired; the token is
sent as ``Authorization: Bearer``. The project is the target's ``project`` or else ADC's. Tokens are
never logged or stored.

Errors use Google's ``{"error": {"code", "message", "status"}}`` body: 429 ``RESOURCE_EXHAUSTED`` is
capacity (``rate_limited``, with ``RetryInfo.retryDelay`` honoured), never quality.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel

from canary.config.loader import Target
from canary.errors import FailureReason
from canary.probing.completion import Completion, ProbeRequest, TokenLogprob
from canary.probing.providers.anthropic import cloud_messages_body, parse_message
from canary.probing.providers.base import PreparedRequest, PrepareError, Provider

try:
    import google.auth
    import google.auth.transport
    from google.auth.credentials import Credentials
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
except ImportError as exc:  # an optional extra: say which one, not just "No module named google"
    raise ImportError(
        "provider 'vertex' needs google-auth: pip install 'llm-quality-canary[vertex]'"
    ) from exc

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_TIMEOUT_S = 30.0
MAX_TOP_LOGPROBS = 20  # generateContent's documented range for ``logprobs`` is 1-20
CAPACITY_STATUSES = frozenset({"RESOURCE_EXHAUSTED"})
# Anthropic's own error types pass through rawPredict unchanged
ANTHROPIC_CAPACITY_TYPES = frozenset({"rate_limit_error", "overloaded_error"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")

NO_ADC = (
    "no Google Application Default Credentials: run 'gcloud auth application-default login', set "
    "GOOGLE_APPLICATION_CREDENTIALS, or run with a service account"
)

CredentialSource = Callable[[], tuple[Credentials, str | None]]


class HttpxAuthResponse(google.auth.transport.Response):
    """google-auth's transport response interface over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxAuthRequest(google.auth.transport.Request):
    """google-auth's documented transport interface over a blocking httpx client.

    google-auth refreshes tokens through a transport; its bundled ones need ``requests`` or
    ``urllib3``, which the ``[vertex]`` extra does not pull in, while httpx is already a dependency.
    Called only from worker threads (token refresh, metadata-server checks).
    """

    def __init__(self, timeout_s: float = TOKEN_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> HttpxAuthResponse:
        try:
            with httpx.Client(timeout=timeout or self.timeout_s) as client:
                return HttpxAuthResponse(client.request(method, url, content=body, headers=headers))
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc  # type: ignore[no-untyped-call]


def application_default_credentials() -> tuple[Credentials, str | None]:
    """``google.auth.default`` with the cloud-platform scope; blocking (files, metadata server)."""
    credentials, project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE], request=HttpxAuthRequest())
    return credentials, project


def endpoint(region: str, base_url: str) -> str:
    if base_url:
        return base_url
    if region == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def gemini_body(request: ProbeRequest) -> dict[str, Any]:
    """The generateContent body: ``contents`` with ``user``/``model`` roles, ``generationConfig``."""
    system = [request.system] if request.system else []
    contents: list[dict[str, Any]] = []
    for m in request.chat_messages:
        if m.role == "system":  # Gemini takes system text only as systemInstruction
            system.append(m.content)
        else:
            role = "model" if m.role == "assistant" else "user"
            contents.append({"role": role, "parts": [{"text": m.content}]})
    config: dict[str, Any] = {"temperature": request.temperature, "maxOutputTokens": request.max_tokens}
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.top_k is not None:
        config["topK"] = request.top_k
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = min(request.top_logprobs, MAX_TOP_LOGPROBS)
    body: dict[str, Any] = {"contents": contents, "generationConfig": config}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    return body


class _Part(BaseModel):
    text: str | None = None
    thought: bool | None = None


class _Content(BaseModel):
    role: str | None = None
    parts: list[_Part] = []


class _LogprobCandidate(BaseModel):
    token: str
    logProbability: float


class _TopCandidates(BaseModel):
    candidates: list[_LogprobCandidate] = []


class _LogprobsResult(BaseModel):
    topCandidates: list[_TopCandidates] = []
    chosenCandidates: list[_LogprobCandidate] = []


class _Candidate(BaseModel):
    content: _Content | None = None
    finishReason: str | None = None
    logprobsResult: _LogprobsResult | None = None


class _UsageMetadata(BaseModel):
    promptTokenCount: int | None = None
    candidatesTokenCount: int | None = None


class _PromptFeedback(BaseModel):
    blockReason: str | None = None


class _GenerateContentResponse(BaseModel):
    candidates: list[_Candidate] = []
    usageMetadata: _UsageMetadata | None = None
    modelVersion: str | None = None
    promptFeedback: _PromptFeedback | None = None


def parse_gemini(data: Any, completion: Completion) -> None:
    parsed = _GenerateContentResponse.model_validate(data)
    if not parsed.candidates:
        # A blocked prompt has no candidates; a fixed probe being blocked is not an answer to score.
        block = parsed.promptFeedback.blockReason if parsed.promptFeedback else None
        raise ValueError(f"no candidates (promptFeedback.blockReason={block})")
    candidate = parsed.candidates[0]
    parts = candidate.content.parts if candidate.content else []
    completion.text = "".join(part.text or "" for part in parts if not part.thought)
    completion.finish_reason = candidate.finishReason
    completion.response_model = parsed.modelVersion
    if parsed.usageMetadata:
        completion.input_tokens = parsed.usageMetadata.promptTokenCount
        completion.output_tokens = parsed.usageMetadata.candidatesTokenCount
    result = candidate.logprobsResult
    if result and result.chosenCandidates:
        tops = result.topCandidates
        completion.tokens = [
            TokenLogprob(
                token=chosen.token,
                logprob=chosen.logProbability,
                # documented as sorted by log probability, most probable first
                top=tuple((c.token, c.logProbability) for c in tops[i].candidates) if i < len(tops) else (),
            )
            for i, chosen in enumerate(result.chosenCandidates)
        ]


def google_error(data: Any) -> dict[str, Any]:
    """The ``error`` object of a Google error body (rawPredict may wrap the body in a list)."""
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return dict(error) if isinstance(error, dict) else {}


def retry_delay_s(error: Mapping[str, Any]) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "30s"``), if present."""
    details = error.get("details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


class VertexProvider(Provider):
    """Vertex AI. ``credentials`` replaces ADC: a callable returning ``(credentials, project or None)``."""

    kind = "vertex"

    def __init__(
        self,
        client: httpx.AsyncClient,
        credentials: CredentialSource | None = None,
        token_timeout_s: float = TOKEN_TIMEOUT_S,
    ) -> None:
        super().__init__(client)
        self._source = credentials or application_default_credentials
        self._credentials: Credentials | None = None
        self._adc_project: str | None = None
        self._token_timeout_s = token_timeout_s
        self._lookup = anyio.Lock()
        self._refresh = anyio.Lock()

    def project(self, target: Target) -> str:
        project = target.spec.project or self._adc_project
        if not project:
            raise PrepareError(
                "provider 'vertex' needs 'project' in the target or a project in the Application Default "
                "Credentials (GOOGLE_CLOUD_PROJECT)"
            )
        return project

    def url(self, target: Target, request: ProbeRequest) -> str:
        region = target.spec.region or ""  # required by config validation for vertex
        if target.spec.resolved_api_format() == "anthropic":
            publisher, method = "anthropic", "rawPredict"
        else:
            publisher, method = "google", "generateContent"
        model = quote(target.spec.model_id, safe="@")
        return (
            f"{endpoint(region, target.spec.base_url)}/v1/projects/{quote(self.project(target), safe='')}"
            f"/locations/{region}/publishers/{publisher}/models/{model}:{method}"
        )

    def headers(self, target: Target) -> dict[str, str]:
        return {"accept": "application/json"}

    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]:
        if target.spec.resolved_api_format() == "anthropic":
            return cloud_messages_body(request, VERTEX_ANTHROPIC_VERSION)
        return gemini_body(request)

    def parse(self, data: Any, completion: Completion) -> None:
        if isinstance(data, dict) and "candidates" in data:
            parse_gemini(data, completion)
        else:
            parse_message(data, completion)

    async def prepare(self, target: Target, request: ProbeRequest) -> PreparedRequest:
        credentials = await self._valid_credentials()
        prepared = await super().prepare(target, request)  # after lookup: the URL may need ADC's project
        headers = dict(prepared.headers)
        # Authorization: Bearer, plus x-goog-user-project when ADC names a quota project
        credentials.apply(headers)  # type: ignore[no-untyped-call]
        return PreparedRequest(prepared.url, headers, prepared.content)

    async def _valid_credentials(self) -> Credentials:
        """ADC, looked up once and refreshed when expired (or about to be), in a worker thread.

        Both the lookup (files, metadata server) and the refresh (a token endpoint) block, so they
        run in worker threads, one at a time however many probes are waiting. A failure is not
        cached: the next request tries again.
        """
        try:
            if self._credentials is None:
                async with self._lookup:
                    if self._credentials is None:
                        credentials, project = await anyio.to_thread.run_sync(self._source)
                        self._credentials, self._adc_project = credentials, project
            credentials = self._credentials
            if not credentials.valid:
                async with self._refresh:
                    if not credentials.valid:  # another task may have refreshed while we waited
                        request = HttpxAuthRequest(self._token_timeout_s)
                        await anyio.to_thread.run_sync(credentials.refresh, request)
            return credentials
        except DefaultCredentialsError as exc:
            raise PrepareError(f"{NO_ADC} ({exc})") from None
        except TransportError as exc:
            raise PrepareError(f"Google token refresh failed: {exc}", FailureReason.CONNECTION) from None
        except GoogleAuthError as exc:
            # google-auth's messages name files and endpoints, never token values
            raise PrepareError(f"Google credentials rejected: {type(exc).__name__}: {exc}") from None

    def classify_response(self, response: httpx.Response, data: Any) -> FailureReason:
        error = google_error(data)
        status = error.get("status")
        if response.status_code == 429 or status in CAPACITY_STATUSES:
            return FailureReason.RATE_LIMITED
        if response.status_code == 529 or error.get("type") in ANTHROPIC_CAPACITY_TYPES:
            return FailureReason.RATE_LIMITED
        if response.status_code == 504 or status == "DEADLINE_EXCEEDED":
            return FailureReason.TIMEOUT
        return self.classify_error(response.status_code, data)

    def describe_error(self, response: httpx.Response, data: Any) -> str | None:
        error = google_error(data)
        message, status = error.get("message"), error.get("status")
        if isinstance(message, str) and isinstance(status, str):
            return f"{status}: {message}"
        return message if isinstance(message, str) else self.error_message(data)

    def retry_after_s(self, response: httpx.Response, data: Any) -> float | None:
        from_header = super().retry_after_s(response, data)
        return from_header if from_header is not None else retry_delay_s(google_error(data))
