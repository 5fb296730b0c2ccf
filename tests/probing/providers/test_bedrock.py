"""Amazon Bedrock: documented request/response pairs, SigV4 verified by a loopback server, error classes.

The loopback server plays bedrock-runtime: it recomputes every request's SigV4 signature with
botocore from what it received (method, raw path, the signed headers, the body) and the secret it
knows for the access key, and answers 403 ``InvalidSignatureException`` when they differ, as AWS
does. Credentials come from botocore's real chain, fed through environment variables.
"""

from __future__ import annotations

import hmac
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.config.loader import Target, build_config
from canary.errors import ConfigError, FailureReason
from canary.probing.completion import Message, ProbeRequest
from canary.probing.providers import get_provider
from canary.probing.providers.bedrock import BedrockProvider
from tests.loopback import ThreadedServer, serve_in_thread

pytestmark = pytest.mark.anyio

# The example credentials of the AWS SigV4 documentation: never valid anywhere.
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)

# --- Recorded pairs -----------------------------------------------------------------------------

# InvokeModel with an Anthropic Claude model. Request: the AWS SDK code example "Invoke Anthropic
# Claude on Amazon Bedrock using the Invoke Model API"
# (https://docs.aws.amazon.com/code-library/latest/ug/bedrock-runtime_example_bedrock-runtime_InvokeModel_AnthropicClaude_section.html);
# body fields per "Anthropic Claude Messages API - request and response"
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages-request-response.html).
# Response: the Messages response documented on that page (id, type, role, model, content, stop_reason,
# stop_sequence, usage).
INVOKE_REQUEST = ProbeRequest(
    mode="chat",
    messages=(Message("user", "Describe the purpose of a 'hello world' program in one line."),),
    max_tokens=512,
    temperature=0.5,
)
INVOKE_BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 512,
    "temperature": 0.5,
    "messages": [{"role": "user", "content": "Describe the purpose of a 'hello world' program in one line."}],
}
INVOKE_RESPONSE = {
    "id": "msg_bdrk_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-haiku-20240307",
    "content": [{"type": "text", "text": "A 'hello world' program shows a language's basic syntax."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 21, "output_tokens": 16},
}

# Converse. Request syntax and response syntax of the Bedrock Runtime API reference, Converse
# (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html): content blocks
# per message, system blocks, inferenceConfig {maxTokens, stopSequences, temperature, topP}; the
# response's output.message, stopReason, usage {inputTokens, outputTokens, totalTokens}, metrics.
CONVERSE_REQUEST = ProbeRequest(
    mode="chat",
    system="Answer in one sentence.",
    messages=(Message("user", "What is the capital of France?"),),
    max_tokens=512,
    temperature=0.0,
    top_p=0.9,
    stop=("\n\n",),
)
CONVERSE_BODY = {
    "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
    "system": [{"text": "Answer in one sentence."}],
    "inferenceConfig": {"maxTokens": 512, "temperature": 0.0, "topP": 0.9, "stopSequences": ["\n\n"]},
}
CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "The capital of France is Paris."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 17, "outputTokens": 8, "totalTokens": 25},
    "metrics": {"latencyMs": 412},
}

# Errors: names and statuses from the Bedrock Runtime service model (botocore's
# data/bedrock-runtime/2023-09-30/service-2.json, the source of the API reference's "Errors"
# sections); the restJson1 wire form names the type in the x-amzn-errortype header as
# "Name:namespace-uri" with {"message": ...} in the body.
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
ERRORS: dict[str, tuple[int, str, str]] = {
    "throttled": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "quota": (400, "ServiceQuotaExceededException", "Your request exceeds the service quota."),
    "notready": (429, "ModelNotReadyException", "The model is not ready to serve inference requests."),
    "invalid": (400, "ValidationException", "Malformed input request: extraneous key [foo]"),
    "denied": (403, "AccessDeniedException", "You don't have access to the model with this ID."),
    "modeltimeout": (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    "internal": (500, "InternalServerException", "The server encountered an internal error."),
    "unavailable": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    "modelerror": (424, "ModelErrorException", "The model failed to process the request."),
}


# --- The loopback bedrock-runtime ---------------------------------------------------------------


class LoopbackBedrock:
    """Verifies SigV4 like AWS, then answers with recorded bodies chosen by the model id."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    def signature_problem(self, request: Request, body: bytes) -> str | None:
        """None when the request carries a valid SigV4 signature for service bedrock."""
        match = AUTH_RE.match(request.headers.get("authorization", ""))
        if not match:
            return "missing or malformed Authorization"
        if match["key"] not in self.secrets:
            return "The security token included in the request is invalid."
        if match["service"] != "bedrock" or match["region"] != REGION:
            return f"Credential should be scoped to a valid region and service {match['service']}"
        timestamp = request.headers.get("x-amz-date", "")
        if timestamp[:8] != match["date"]:
            return "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date"
        # Rebuild the request from what arrived on the wire, signed headers only.
        signed = match["signed"].split(";")
        raw_path = request.scope["raw_path"].decode("ascii")
        aws_request = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['host']}{raw_path}",
            data=body,
            headers={name: request.headers[name] for name in signed if name in request.headers},
        )
        aws_request.context["timestamp"] = timestamp
        token = request.headers.get("x-amz-security-token")
        signer = SigV4Auth(Credentials(match["key"], self.secrets[match["key"]], token), "bedrock", REGION)
        canonical = signer.canonical_request(aws_request)
        expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
        if not hmac.compare_digest(expected, match["signature"]):
            return "The request signature we calculated does not match the signature you provided."
        return None

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        raw_path = request.scope["raw_path"].decode("ascii")
        self.requests.append({"path": raw_path, "headers": dict(request.headers), "body": json.loads(body)})
        problem = self.signature_problem(request, body)
        if problem:
            return JSONResponse(
                {"message": problem},
                status_code=403,
                headers={"x-amzn-errortype": "InvalidSignatureException"},
            )
        model = request.path_params["path"].split("/")[1]  # path params arrive decoded
        if model in ERRORS:
            status, name, message = ERRORS[model]
            headers = {"x-amzn-errortype": name + ERROR_TYPE_SUFFIX, "x-amzn-requestid": "req-1"}
            if model == "throttled":
                headers["retry-after"] = "3"
            return JSONResponse({"message": message}, status_code=status, headers=headers)
        if raw_path.endswith("/converse"):
            return JSONResponse(CONVERSE_RESPONSE, headers={"x-amzn-requestid": "req-2"})
        return JSONResponse(INVOKE_RESPONSE, headers={"x-amzn-requestid": "req-3"})


@pytest.fixture(scope="module")
def bedrock() -> Iterator[tuple[LoopbackBedrock, ThreadedServer]]:
    loopback = LoopbackBedrock({ACCESS_KEY: SECRET_KEY, "AKIDREFRESHED": "refreshed-secret"})
    with serve_in_thread(loopback.app) as server:
        yield loopback, server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """botocore's chain sees only what a test sets: no profile files, no instance or container roles."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def aws_keys(aws_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    aws_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return aws_env


def target(model_id: str = CLAUDE, base_url: str = "", **extra: Any) -> Target:
    spec = {
        "model": "m",
        "platform": "bedrock",
        "pool": "us-east-1",
        "provider": "bedrock",
        "model_id": model_id,
        "region": REGION,
        "timeout_s": 5.0,
        "served_by_headers": ["x-amzn-requestid"],
        **extra,
    }
    if base_url:
        spec["base_url"] = base_url
    return build_config({"targets": [spec]}, "test.toml").targets[0]


async def complete(
    server: ThreadedServer, model_id: str, request: ProbeRequest = INVOKE_REQUEST, **extra: Any
):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        return await get_provider("bedrock", client).complete(target(model_id, server.url, **extra), request)


# --- Body shapes and URLs -----------------------------------------------------------------------


def test_invoke_model_body_is_the_documented_anthropic_body() -> None:
    provider = BedrockProvider(httpx.AsyncClient())
    assert provider.body(target(), INVOKE_REQUEST) == INVOKE_BODY


def test_converse_body_is_the_documented_converse_body() -> None:
    provider = BedrockProvider(httpx.AsyncClient())
    t = target("meta.llama3-8b-instruct-v1:0")
    assert t.spec.resolved_api_format() == "converse"
    assert provider.body(t, CONVERSE_REQUEST) == CONVERSE_BODY


def test_converse_passes_top_k_as_an_additional_model_field() -> None:
    provider = BedrockProvider(httpx.AsyncClient())
    request = ProbeRequest(mode="chat", messages=(Message("user", "hi"),), top_k=1)
    body = provider.body(target("mistral.mistral-large-2402-v1:0"), request)
    assert body["additionalModelRequestFields"] == {"top_k": 1}


@pytest.mark.parametrize(
    ("model_id", "api_format", "expected"),
    [
        (CLAUDE, None, "anthropic"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", None, "anthropic"),
        ("amazon.nova-pro-v1:0", None, "converse"),
        (CLAUDE, "converse", "converse"),
    ],
)
def test_api_format_follows_the_model_id_unless_configured(
    model_id: str, api_format: str | None, expected: str
) -> None:
    extra = {"api_format": api_format} if api_format else {}
    assert target(model_id, **extra).spec.resolved_api_format() == expected


def test_default_endpoint_and_path_match_botocores_own_client(aws_keys: pytest.MonkeyPatch) -> None:
    """The URL we sign is the one botocore's bedrock-runtime client would send for InvokeModel."""

    class Captured(Exception):
        pass

    sent: list[Any] = []

    def capture(request: Any, **kwargs: Any) -> None:
        sent.append(request)
        raise Captured  # stop before anything leaves the machine

    client = botocore.session.get_session().create_client("bedrock-runtime", region_name=REGION)
    client.meta.events.register("before-send.bedrock-runtime.InvokeModel", capture)
    with pytest.raises(Captured):
        client.invoke_model(modelId=CLAUDE, body=b"{}", contentType="application/json")
    ours = BedrockProvider(httpx.AsyncClient()).url(target(), INVOKE_REQUEST)
    assert ours == sent[0].url
    assert (
        ours
        == "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
    )


def test_bedrock_without_region_is_a_config_error() -> None:
    spec = {"model": "m", "platform": "p", "pool": "q", "provider": "bedrock", "model_id": CLAUDE}
    with pytest.raises(ConfigError, match=r"targets\[0\]: .*provider 'bedrock' needs 'region'"):
        build_config({"targets": [spec]}, "test.toml")


def test_api_format_the_platform_does_not_speak_is_a_config_error() -> None:
    expected = "'api_format' for provider 'bedrock' must be 'anthropic' or 'converse'"
    with pytest.raises(ConfigError, match=expected):
        target(api_format="gemini")


# --- Signed requests against the loopback server ------------------------------------------------


async def test_invoke_model_is_signed_and_parses_the_documented_response(bedrock, aws_keys) -> None:  # type: ignore[no-untyped-def]
    loopback, server = bedrock
    c = await complete(server, CLAUDE)
    assert c.ok, c.error
    assert c.text == INVOKE_RESPONSE["content"][0]["text"]  # type: ignore[index]
    assert (c.finish_reason, c.input_tokens, c.output_tokens) == ("end_turn", 21, 16)
    assert c.response_model == "claude-3-haiku-20240307"
    assert c.served_by == {"x-amzn-requestid": "req-3"}
    sent = loopback.requests[-1]
    assert sent["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
    assert sent["body"] == INVOKE_BODY
    signed = AUTH_RE.match(sent["headers"]["authorization"])
    assert signed is not None and signed["key"] == ACCESS_KEY
    assert {"host", "x-amz-date", "content-type"} <= set(signed["signed"].split(";"))


async def test_converse_is_signed_and_parses_the_documented_response(bedrock, aws_keys) -> None:  # type: ignore[no-untyped-def]
    loopback, server = bedrock
    c = await complete(server, "amazon.nova-pro-v1:0", CONVERSE_REQUEST)
    assert c.ok, c.error
    assert c.text == "The capital of France is Paris."
    assert (c.finish_reason, c.input_tokens, c.output_tokens) == ("end_turn", 17, 8)
    assert c.tokens is None  # Bedrock returns no logprobs
    assert loopback.requests[-1]["path"] == "/model/amazon.nova-pro-v1%3A0/converse"
    assert loopback.requests[-1]["body"] == CONVERSE_BODY


async def test_session_token_and_extra_headers_are_signed_too(bedrock, aws_keys) -> None:  # type: ignore[no-untyped-def]
    loopback, server = bedrock
    aws_keys.setenv("AWS_SESSION_TOKEN", "session-token-for-test")
    request = ProbeRequest(mode="chat", messages=(Message("user", "hi"),), session_key="sess-7")
    c = await complete(server, CLAUDE, request, headers={"x-team": "canary"})
    assert c.ok, c.error
    headers = loopback.requests[-1]["headers"]
    assert headers["x-amz-security-token"] == "session-token-for-test"
    signed = AUTH_RE.match(headers["authorization"])
    assert signed is not None
    assert {"x-amz-security-token", "x-session-key", "x-team"} <= set(signed["signed"].split(";"))


async def test_the_loopback_server_rejects_a_wrong_secret(bedrock, aws_env) -> None:  # type: ignore[no-untyped-def]
    """The verifier is not vacuous: a request signed with another secret is refused."""
    _, server = bedrock
    aws_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    c = await complete(server, CLAUDE)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR and c.http_status == 403
    assert "InvalidSignatureException: The request signature we calculated" in (c.error or "")


async def test_the_loopback_server_rejects_a_body_other_than_the_one_signed(bedrock, aws_keys) -> None:  # type: ignore[no-untyped-def]
    _, server = bedrock
    async with httpx.AsyncClient() as client:
        provider = BedrockProvider(client)
        prepared = await provider.prepare(target(CLAUDE, server.url), INVOKE_REQUEST)
        response = await client.post(prepared.url, content=prepared.content + b" ", headers=prepared.headers)
    assert response.status_code == 403


async def test_refreshable_credentials_are_refreshed_in_a_worker_thread(bedrock, aws_env) -> None:  # type: ignore[no-untyped-def]
    """Role and SSO credentials expire: botocore refreshes them; the blocking call stays off the loop."""
    loopback, server = bedrock
    refreshed_on: list[int] = []

    def refresh() -> dict[str, str]:
        refreshed_on.append(threading.get_ident())
        expiry = datetime.now(UTC) + timedelta(hours=1)
        return {
            "access_key": "AKIDREFRESHED",
            "secret_key": "refreshed-secret",
            "token": "refreshed-token",
            "expiry_time": expiry.isoformat(),
        }

    expired = {
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "token": "old-token",
        "expiry_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    }
    credentials = RefreshableCredentials.create_from_metadata(expired, refresh, "test-role")
    async with httpx.AsyncClient() as client:
        provider = BedrockProvider(client, credentials=lambda: credentials)
        first = await provider.complete(target(CLAUDE, server.url), INVOKE_REQUEST)
        second = await provider.complete(target(CLAUDE, server.url), INVOKE_REQUEST)
    assert first.ok and second.ok, (first.error, second.error)
    assert len(refreshed_on) == 1 and refreshed_on[0] != threading.get_ident()
    assert AUTH_RE.match(loopback.requests[-1]["headers"]["authorization"])["key"] == "AKIDREFRESHED"  # type: ignore[index]


async def test_credentials_are_looked_up_once_per_provider(bedrock, aws_env) -> None:  # type: ignore[no-untyped-def]
    _, server = bedrock
    lookups: list[int] = []

    def source() -> Credentials:
        lookups.append(1)
        return Credentials(ACCESS_KEY, SECRET_KEY)

    async with httpx.AsyncClient() as client:
        provider = BedrockProvider(client, credentials=source)
        for _ in range(3):
            assert (await provider.complete(target(CLAUDE, server.url), INVOKE_REQUEST)).ok
    assert lookups == [1]


async def test_no_aws_credentials_is_a_failed_run_not_an_exception(bedrock, aws_env) -> None:  # type: ignore[no-untyped-def]
    loopback, server = bedrock
    before = len(loopback.requests)
    c = await complete(server, CLAUDE)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR and c.http_status is None
    assert "no AWS credentials found" in (c.error or "")
    assert len(loopback.requests) == before  # nothing unsigned was sent


async def test_a_broken_profile_is_a_failed_run_naming_the_problem(bedrock, aws_env) -> None:  # type: ignore[no-untyped-def]
    _, server = bedrock
    aws_env.setenv("AWS_PROFILE", "does-not-exist")
    c = await complete(server, CLAUDE)
    assert not c.ok and c.reason is FailureReason.CLIENT_ERROR
    assert "ProfileNotFound" in (c.error or "") and SECRET_KEY not in (c.error or "")


# --- Error classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("throttled", FailureReason.RATE_LIMITED),
        ("quota", FailureReason.RATE_LIMITED),  # a 400 on the wire: the header decides, not the status
        ("notready", FailureReason.RATE_LIMITED),
        ("invalid", FailureReason.CLIENT_ERROR),
        ("denied", FailureReason.CLIENT_ERROR),
        ("modeltimeout", FailureReason.TIMEOUT),
        ("internal", FailureReason.SERVER_ERROR),
        ("unavailable", FailureReason.SERVER_ERROR),
        ("modelerror", FailureReason.SERVER_ERROR),
    ],
)
async def test_bedrock_errors_are_classified_by_their_error_type(bedrock, aws_keys, model, reason) -> None:  # type: ignore[no-untyped-def]
    _, server = bedrock
    c = await complete(server, model)
    status, name, message = ERRORS[model]
    assert not c.ok and c.reason is reason and c.http_status == status
    assert c.error == f"HTTP {status}: {name}: {message}"
    assert c.served_by == {"x-amzn-requestid": "req-1"}


async def test_throttling_honours_retry_after(bedrock, aws_keys) -> None:  # type: ignore[no-untyped-def]
    _, server = bedrock
    c = await complete(server, "throttled")
    assert c.reason is FailureReason.RATE_LIMITED and c.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        # the error type may come only in the body, as "__type" with a namespace prefix
        ({}, {"__type": "com.amazon.coral#ThrottlingException", "message": "slow down"}, "rate_limited"),
        ({"x-amzn-errortype": "ServiceQuotaExceededException"}, {"Message": "quota"}, "rate_limited"),
        ({}, {"message": "Bad request"}, "client_error"),
    ],
)
def test_error_type_is_read_from_header_or_body(headers, body, reason) -> None:  # type: ignore[no-untyped-def]
    provider = BedrockProvider(httpx.AsyncClient())
    response = httpx.Response(400, headers=headers, json=body)
    assert provider.classify_response(response, body) == reason
    assert provider.describe_error(response, body)


def test_without_the_extra_the_import_error_names_it() -> None:
    """``sys.modules[name] = None`` makes an import fail as if the package were not installed."""
    code = "import sys; sys.modules['botocore'] = None; import canary.probing.providers.bedrock"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "pip install 'llm-quality-canary[bedrock]'" in result.stderr
