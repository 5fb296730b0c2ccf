"""Google Vertex AI: documented request/response pairs, Bearer auth from ADC on loopback, error classes.

The loopback server plays both aiplatform.googleapis.com (it checks the URL shape and the Bearer
token, and answers with recorded bodies chosen by the model name) and Google's OAuth 2 token
endpoint, which a service-account Application Default Credentials file points at through its
``token_uri``; the endpoint checks the signed JWT assertion with the account's public key. So the
real ``google.auth.default`` chain and a real token refresh run, all on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from google.oauth2.credentials import Credentials as UserCredentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.config.loader import Target, build_config
from canary.errors import ConfigError, FailureReason
from canary.probing.completion import Message, ProbeRequest
from canary.probing.providers import get_provider
from canary.probing.providers.vertex import VertexProvider
from tests.loopback import ThreadedServer, serve_in_thread

pytestmark = pytest.mark.anyio

PROJECT = "canary-test-project"
SERVICE_ACCOUNT = "canary@canary-test-project.iam.gserviceaccount.com"
REVOKED_ACCOUNT = "revoked@canary-test-project.iam.gserviceaccount.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
TOKEN = "ya29.loopback-access-token"
STATIC_TOKEN = "ya29.static-token-for-test"
REFRESH_TOKEN = "1//loopback-refresh-token"
CLAUDE = "claude-3-5-sonnet-v2@20241022"
GEMINI = "gemini-2.0-flash"

# --- Recorded pairs -----------------------------------------------------------------------------

# rawPredict with a Claude model. "Request predictions with Claude models"
# (https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/use-claude): POST
# https://{LOCATION}-aiplatform.googleapis.com/v1/projects/{PROJECT_ID}/locations/{LOCATION}/publishers/
# anthropic/models/{MODEL}:rawPredict with "anthropic_version": "vertex-2023-10-16", messages and
# max_tokens in the body; "Claude on Vertex AI" (https://docs.anthropic.com/en/api/claude-on-vertex-ai):
# model is not passed in the body, anthropic_version is passed in the body rather than as a header.
# The response is the Anthropic Messages response.
RAW_PREDICT_REQUEST = ProbeRequest(
    mode="chat", messages=(Message("user", "Hey Claude!"),), max_tokens=100, temperature=0.0
)
RAW_PREDICT_BODY = {
    "anthropic_version": "vertex-2023-10-16",
    "messages": [{"role": "user", "content": "Hey Claude!"}],
    "max_tokens": 100,
    "temperature": 0.0,
}
RAW_PREDICT_URL = (
    "https://us-east5-aiplatform.googleapis.com/v1/projects/canary-test-project/locations/us-east5"
    "/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict"
)
RAW_PREDICT_RESPONSE = {
    "id": "msg_vrtx_01AbCdEfGhIjKlMnOpQrStUv",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-v2-20241022",
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 12},
}

# generateContent with logprobs. "Generate content with the Gemini API in Vertex AI"
# (https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference): request body
# contents[].role/parts[].text, systemInstruction, generationConfig {temperature, topP, topK,
# maxOutputTokens, stopSequences, responseLogprobs, logprobs}; response body candidates[].content,
# finishReason, avgLogprobs, logprobsResult {topCandidates[].candidates[], chosenCandidates[]} of
# {token, logProbability}, usageMetadata {promptTokenCount, candidatesTokenCount, totalTokenCount},
# modelVersion (GenerateContentResponse, .../reference/rest/v1/GenerateContentResponse).
GENERATE_REQUEST = ProbeRequest(
    mode="chat",
    system="Answer with one word.",
    messages=(Message("user", "What is the capital of France?"),),
    max_tokens=8,
    temperature=0.0,
    top_k=40,
    logprobs=True,
    top_logprobs=2,
)
GENERATE_BODY = {
    "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
    "systemInstruction": {"parts": [{"text": "Answer with one word."}]},
    "generationConfig": {
        "temperature": 0.0,
        "maxOutputTokens": 8,
        "topK": 40,
        "responseLogprobs": True,
        "logprobs": 2,
    },
}
GENERATE_URL = (
    "https://us-central1-aiplatform.googleapis.com/v1/projects/canary-test-project/locations/us-central1"
    "/publishers/google/models/gemini-2.0-flash:generateContent"
)
GENERATE_RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Paris"}]},
            "finishReason": "STOP",
            "avgLogprobs": -0.0123,
            "logprobsResult": {
                "topCandidates": [
                    {
                        "candidates": [
                            {"token": "Paris", "logProbability": -0.0123},
                            {"token": "Lyon", "logProbability": -6.25},
                        ]
                    }
                ],
                "chosenCandidates": [{"token": "Paris", "logProbability": -0.0123}],
            },
        }
    ],
    "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": 1, "totalTokenCount": 15},
    "modelVersion": "gemini-2.0-flash-001",
    "createTime": "2025-01-01T00:00:00.000000Z",
    "responseId": "loopback-response-1",
}

# Errors: the Google API error model {"error": {"code", "message", "status", "details"}}
# (https://cloud.google.com/apis/design/errors) with the statuses of "API errors" for generative AI
# (https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/api-errors); google.rpc.RetryInfo
# carries the retry delay as a Duration string. Claude's own errors come through rawPredict in the
# Anthropic shape (https://docs.anthropic.com/en/api/errors: 529 overloaded_error).
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "quota": (
        429,
        {
            "error": {
                "code": 429,
                "message": "Quota exceeded for generate_content_requests_per_minute.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [RETRY_INFO],
            }
        },
    ),
    "denied": (
        403,
        {
            "error": {
                "code": 403,
                "message": "Permission 'aiplatform.endpoints.predict' denied on resource.",
                "status": "PERMISSION_DENIED",
            }
        },
    ),
    "invalid": (
        400,
        {
            "error": {
                "code": 400,
                "message": "Request contains an invalid argument.",
                "status": "INVALID_ARGUMENT",
            }
        },
    ),
    "internal": (
        500,
        {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}},
    ),
    "unavailable": (
        503,
        {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}},
    ),
    "deadline": (
        504,
        {
            "error": {
                "code": 504,
                "message": "Deadline expired before operation.",
                "status": "DEADLINE_EXCEEDED",
            }
        },
    ),
    "claude-overloaded": (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ),
}


# --- The loopback Vertex AI and token endpoint --------------------------------------------------


class LoopbackVertex:
    def __init__(self, public_key_pem: bytes) -> None:
        self.public_key_pem = public_key_pem
        self.requests: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, list[str]]] = []
        self.app = Starlette(
            routes=[
                Route(
                    "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{call}",
                    self.predict,
                    methods=["POST"],
                ),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    async def token(self, request: Request) -> Response:
        """Google's OAuth 2 token endpoint: JWT-bearer grants (service accounts) and refresh tokens."""
        form = parse_qs((await request.body()).decode())
        self.token_requests.append(form)
        granted = {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}
        invalid = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        grant = form.get("grant_type", [""])[0]
        if grant == "refresh_token" and form.get("refresh_token") == [REFRESH_TOKEN]:
            return JSONResponse(granted)
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                # The assertion names Google's token endpoint as audience wherever it is posted.
                claims = jwt.decode(
                    form["assertion"][0], certs=self.public_key_pem, audience=GOOGLE_TOKEN_URI
                )
            except ValueError as exc:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}, 400
                )
            if claims["iss"] == SERVICE_ACCOUNT and "cloud-platform" in claims.get("scope", ""):
                return JSONResponse(granted)
        return JSONResponse(invalid, status_code=400)

    async def predict(self, request: Request) -> Response:
        body = json.loads(await request.body())
        p = request.path_params
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        if request.headers.get("authorization") not in (f"Bearer {TOKEN}", f"Bearer {STATIC_TOKEN}"):
            unauthenticated = {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            }
            return JSONResponse(unauthenticated, status_code=401)
        model, _, method = p["call"].partition(":")
        if model in ERRORS:
            status, error = ERRORS[model]
            headers = {"retry-after": "5"} if model == "deadline" else {}
            return JSONResponse(error, status_code=status, headers=headers)
        if (p["publisher"], method) == ("anthropic", "rawPredict"):
            return JSONResponse(RAW_PREDICT_RESPONSE)
        if (p["publisher"], method) == ("google", "generateContent"):
            return JSONResponse(GENERATE_RESPONSE)
        return JSONResponse({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, 404)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def vertex(private_key: rsa.RSAPrivateKey) -> Iterator[tuple[LoopbackVertex, ThreadedServer]]:
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    loopback = LoopbackVertex(public_pem)
    with serve_in_thread(loopback.app) as server:
        yield loopback, server


@pytest.fixture
def adc(vertex, private_key, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A service-account ADC file, generated here, whose token endpoint is the loopback server."""
    _, server = vertex
    path = tmp_path / "adc.json"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "loopback-key-1",
        "private_key": pem.decode(),
        "client_email": SERVICE_ACCOUNT,
        "client_id": "1234567890",
        "token_uri": f"{server.url}/token",
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # never the developer's gcloud
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)  # the project comes from the file
    return path


def target(model_id: str = CLAUDE, base_url: str = "", **extra: Any) -> Target:
    spec = {
        "model": "m",
        "platform": "vertex",
        "pool": "us-east5",
        "provider": "vertex",
        "model_id": model_id,
        "region": "us-east5" if "claude" in model_id else "us-central1",
        "project": PROJECT,
        "timeout_s": 5.0,
        **extra,
    }
    if base_url:
        spec["base_url"] = base_url
    return build_config({"targets": [spec]}, "test.toml").targets[0]


def static_credentials() -> tuple[UserCredentials, str | None]:
    return UserCredentials(token=STATIC_TOKEN), None


async def complete(
    server: ThreadedServer, model_id: str, request: ProbeRequest = RAW_PREDICT_REQUEST, **extra: Any
):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        provider = VertexProvider(client, credentials=static_credentials)
        return await provider.complete(target(model_id, server.url, **extra), request)


# --- Body shapes and URLs -----------------------------------------------------------------------


async def test_raw_predict_url_and_body_are_the_documented_ones() -> None:
    provider = VertexProvider(httpx.AsyncClient(), credentials=static_credentials)
    t = target(CLAUDE)
    assert t.spec.resolved_api_format() == "anthropic"
    assert provider.url(t, RAW_PREDICT_REQUEST) == RAW_PREDICT_URL
    assert provider.body(t, RAW_PREDICT_REQUEST) == RAW_PREDICT_BODY


async def test_generate_content_url_and_body_are_the_documented_ones() -> None:
    provider = VertexProvider(httpx.AsyncClient(), credentials=static_credentials)
    t = target(GEMINI)
    assert t.spec.resolved_api_format() == "gemini"
    assert provider.url(t, GENERATE_REQUEST) == GENERATE_URL
    assert provider.body(t, GENERATE_REQUEST) == GENERATE_BODY


def test_region_global_uses_the_global_endpoint() -> None:
    provider = VertexProvider(httpx.AsyncClient(), credentials=static_credentials)
    url = provider.url(target(GEMINI, region="global"), GENERATE_REQUEST)
    assert url.startswith(
        "https://aiplatform.googleapis.com/v1/projects/canary-test-project/locations/global/"
    )


def test_gemini_roles_are_user_and_model_and_system_messages_become_system_instruction() -> None:
    provider = VertexProvider(httpx.AsyncClient(), credentials=static_credentials)
    request = ProbeRequest(
        mode="chat",
        messages=(Message("system", "Be brief."), Message("user", "1+1?"), Message("assistant", "2")),
    )
    body = provider.body(target(GEMINI), request)
    assert [c["role"] for c in body["contents"]] == ["user", "model"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert "responseLogprobs" not in body["generationConfig"]


def test_vertex_without_region_is_a_config_error() -> None:
    spec = {"model": "m", "platform": "p", "pool": "q", "provider": "vertex", "model_id": GEMINI}
    with pytest.raises(ConfigError, match="provider 'vertex' needs 'region'"):
        build_config({"targets": [spec]}, "test.toml")


def test_api_format_on_a_provider_without_formats_is_a_config_error() -> None:
    spec = {
        "model": "m",
        "platform": "p",
        "pool": "q",
        "provider": "anthropic",
        "base_url": "http://x",
        "model_id": "claude",
        "api_format": "anthropic",
    }
    with pytest.raises(ConfigError, match="'api_format' applies only to providers 'bedrock' and 'vertex'"):
        build_config({"targets": [spec]}, "test.toml")


# --- Requests against the loopback server ------------------------------------------------------


async def test_raw_predict_sends_bearer_token_and_parses_the_documented_response(vertex) -> None:  # type: ignore[no-untyped-def]
    loopback, server = vertex
    c = await complete(server, CLAUDE)
    assert c.ok, c.error
    assert c.text == "Hello! How can I help you today?" and c.finish_reason == "end_turn"
    assert (c.input_tokens, c.output_tokens) == (10, 12)
    sent = loopback.requests[-1]
    assert sent["path"] == (
        f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/{CLAUDE}:rawPredict"
    )
    assert sent["headers"]["authorization"] == f"Bearer {STATIC_TOKEN}"
    assert sent["body"] == RAW_PREDICT_BODY


async def test_generate_content_parses_text_usage_and_logprobs(vertex) -> None:  # type: ignore[no-untyped-def]
    loopback, server = vertex
    c = await complete(server, GEMINI, GENERATE_REQUEST)
    assert c.ok, c.error
    assert c.text == "Paris" and c.finish_reason == "STOP" and c.response_model == "gemini-2.0-flash-001"
    assert (c.input_tokens, c.output_tokens) == (14, 1)
    assert c.tokens is not None and [t.token for t in c.tokens] == ["Paris"]
    assert c.tokens[0].logprob == -0.0123
    assert c.tokens[0].top == (("Paris", -0.0123), ("Lyon", -6.25))
    assert loopback.requests[-1]["body"] == GENERATE_BODY


async def test_blocked_prompt_without_candidates_is_a_schema_failure_not_an_answer() -> None:
    from canary.probing.completion import Completion
    from canary.probing.providers.vertex import parse_gemini

    with pytest.raises(ValueError, match="blockReason=SAFETY"):
        parse_gemini({"promptFeedback": {"blockReason": "SAFETY"}}, Completion(ok=True))


async def test_application_default_credentials_are_refreshed_once_in_a_worker_thread(vertex, adc) -> None:  # type: ignore[no-untyped-def]
    """The real ADC chain: a service-account file, a JWT grant at the token endpoint, its project."""
    loopback, server = vertex
    before = len(loopback.token_requests)
    async with httpx.AsyncClient() as client:
        provider = get_provider("vertex", client)
        t = target(GEMINI, server.url, project=None)  # the project comes from ADC
        results = []

        async def one() -> None:
            results.append(await provider.complete(t, GENERATE_REQUEST))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert all(c.ok for c in results), [c.error for c in results]
    assert len(loopback.token_requests) - before == 1  # five probes, one refresh
    assert loopback.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert loopback.requests[-1]["path"].startswith(f"/v1/projects/{PROJECT}/locations/us-central1/")


async def test_an_expired_token_is_refreshed_off_the_event_loop(vertex) -> None:  # type: ignore[no-untyped-def]
    loopback, server = vertex
    stale = UserCredentials(
        token="ya29.stale",
        expiry=datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1),  # google-auth: naive UTC
        refresh_token=REFRESH_TOKEN,
        token_uri=f"{server.url}/token",
        client_id="canary-test.apps.googleusercontent.com",
        client_secret="loopback-client-secret",
    )
    refreshed_on: list[int] = []
    refresh = stale.refresh

    def recording_refresh(request: Any) -> None:
        refreshed_on.append(threading.get_ident())
        refresh(request)

    stale.refresh = recording_refresh  # type: ignore[method-assign]
    async with httpx.AsyncClient() as client:
        provider = VertexProvider(client, credentials=lambda: (stale, None))
        c = await provider.complete(target(CLAUDE, server.url), RAW_PREDICT_REQUEST)
    assert c.ok, c.error
    assert refreshed_on and refreshed_on[0] != threading.get_ident()
    assert loopback.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"


async def test_missing_adc_is_a_failed_run_not_an_exception(vertex, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    loopback, server = vertex
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    before = len(loopback.requests)
    async with httpx.AsyncClient() as client:
        c = await get_provider("vertex", client).complete(target(CLAUDE, server.url), RAW_PREDICT_REQUEST)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR and c.http_status is None
    assert "no Google Application Default Credentials" in (c.error or "")
    assert len(loopback.requests) == before


async def test_a_refused_token_grant_is_a_failed_run(vertex, adc) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    info = json.loads(adc.read_text())
    adc.write_text(json.dumps({**info, "client_email": REVOKED_ACCOUNT}), encoding="utf-8")
    async with httpx.AsyncClient() as client:
        c = await get_provider("vertex", client).complete(target(CLAUDE, server.url), RAW_PREDICT_REQUEST)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR
    assert "RefreshError" in (c.error or "") and "invalid_grant" in (c.error or "")
    assert "PRIVATE KEY" not in (c.error or "")


async def test_no_project_anywhere_is_a_failed_run(vertex) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    c = await complete(server, CLAUDE, project=None)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR and "needs 'project'" in (c.error or "")


async def test_an_unreachable_token_endpoint_is_a_connection_failure(vertex) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, server = vertex
    stale = UserCredentials(
        token=None,
        refresh_token=REFRESH_TOKEN,
        token_uri=f"http://127.0.0.1:{port}/token",
        client_id="canary-test.apps.googleusercontent.com",
        client_secret="loopback-client-secret",
    )
    async with httpx.AsyncClient() as client:
        provider = VertexProvider(client, credentials=lambda: (stale, PROJECT), token_timeout_s=2.0)
        c = await provider.complete(target(CLAUDE, server.url), RAW_PREDICT_REQUEST)
    assert not c.ok and c.reason is FailureReason.CONNECTION
    assert (c.error or "").startswith("Google token refresh failed: ConnectError")


# --- Error classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason", "message"),
    [
        ("quota", FailureReason.RATE_LIMITED, "RESOURCE_EXHAUSTED: Quota exceeded"),
        ("denied", FailureReason.CLIENT_ERROR, "PERMISSION_DENIED: Permission"),
        ("invalid", FailureReason.CLIENT_ERROR, "INVALID_ARGUMENT: Request contains"),
        ("internal", FailureReason.SERVER_ERROR, "INTERNAL: Internal error"),
        ("unavailable", FailureReason.SERVER_ERROR, "UNAVAILABLE: The service"),
        ("deadline", FailureReason.TIMEOUT, "DEADLINE_EXCEEDED: Deadline"),
        ("claude-overloaded", FailureReason.RATE_LIMITED, "Overloaded"),
    ],
)
async def test_vertex_errors_are_classified_by_status(vertex, model, reason, message) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    c = await complete(server, model)
    assert not c.ok and c.reason is reason and c.http_status == ERRORS[model][0]
    assert (c.error or "").startswith(f"HTTP {ERRORS[model][0]}: {message}")


async def test_resource_exhausted_honours_the_retry_info_delay(vertex) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    c = await complete(server, "quota")
    assert c.reason is FailureReason.RATE_LIMITED and c.retry_after_s == 7.0


async def test_a_retry_after_header_wins_over_the_body(vertex) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    c = await complete(server, "deadline")
    assert c.retry_after_s == 5.0


async def test_an_invalid_token_is_unauthenticated_client_error(vertex) -> None:  # type: ignore[no-untyped-def]
    _, server = vertex
    async with httpx.AsyncClient() as client:
        provider = VertexProvider(client, credentials=lambda: (UserCredentials(token="ya29.wrong"), PROJECT))
        c = await provider.complete(target(CLAUDE, server.url), RAW_PREDICT_REQUEST)
    assert c.reason is FailureReason.CLIENT_ERROR and c.http_status == 401
    assert "UNAUTHENTICATED" in (c.error or "")


def test_without_the_extra_the_import_error_names_it() -> None:
    """``sys.modules[name] = None`` makes an import fail as if the package were not installed."""
    code = "import sys; sys.modules['google.auth'] = None; import canary.probing.providers.vertex"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "pip install 'llm-quality-canary[vertex]'" in result.stderr
