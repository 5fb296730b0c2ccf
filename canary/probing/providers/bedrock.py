"""Amazon Bedrock Runtime: InvokeModel with the Anthropic Messages body, or Converse, signed with SigV4.

``POST {endpoint}/model/{modelId}/invoke`` takes the Anthropic Messages body with
``anthropic_version: "bedrock-2023-05-31"`` and no ``model``; ``POST {endpoint}/model/{modelId}/converse``
takes Bedrock's own model-independent body. The endpoint is ``https://bedrock-runtime.{region}.amazonaws.com``
unless the target sets ``base_url``. Neither API returns logprobs.

Credentials come from botocore's standard chain (environment, shared config and credentials files,
SSO, container and instance roles) and are looked up once per provider; refreshable ones (roles,
SSO) are refreshed by botocore when they near expiry. Every request is signed with SigV4 for service
``bedrock`` in the target's region over the exact bytes sent. Credentials are never logged or stored.

Errors: Bedrock names the error in the ``x-amzn-errortype`` header (and sometimes ``__type`` in the
body) with a ``message`` in the body. Throttling, quota and "model not ready" are capacity
(``rate_limited``), never quality.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel

from canary.config.loader import Target
from canary.errors import FailureReason
from canary.probing.completion import Completion, ProbeRequest
from canary.probing.providers.anthropic import cloud_messages_body, parse_message
from canary.probing.providers.base import PreparedRequest, PrepareError, Provider

try:
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # an optional extra: say which one, not just "No module named botocore"
    raise ImportError("provider 'bedrock' needs botocore: pip install 'llm-quality-canary[bedrock]'") from exc

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
SIGNING_NAME = "bedrock"  # the SigV4 service name of bedrock-runtime (its service model's signingName)

# Error types (the ``x-amzn-errortype`` header) by what they mean for a canary run. The statuses
# are the Bedrock Runtime service model's: ServiceQuotaExceededException is a 400, so a status-only
# rule would call a quota problem a client error.
CAPACITY_ERRORS = frozenset(
    {
        "ThrottlingException",
        "ServiceQuotaExceededException",
        "ModelNotReadyException",
        "TooManyRequestsException",
    }
)
SERVER_ERRORS = frozenset({"InternalServerException", "ServiceUnavailableException", "ModelErrorException"})
TIMEOUT_ERRORS = frozenset({"ModelTimeoutException"})

NO_CREDENTIALS = (
    "no AWS credentials found (looked in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
    "~/.aws config, SSO, container and instance roles)"
)

CredentialSource = Callable[[], Credentials | None]


def default_credentials() -> Credentials | None:
    """botocore's standard credential chain (env, profile, SSO, role); None when nothing is configured."""
    credentials: Credentials | None = botocore.session.get_session().get_credentials()
    return credentials


def endpoint(target: Target) -> str:
    return target.spec.base_url or f"https://bedrock-runtime.{target.spec.region}.amazonaws.com"


def sigv4_headers(
    credentials: ReadOnlyCredentials, region: str, url: str, headers: dict[str, str], content: bytes
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``Authorization`` (and ``X-Amz-Security-Token``) for this request."""
    aws_request = AWSRequest(method="POST", url=url, data=content, headers=headers)
    SigV4Auth(credentials, SIGNING_NAME, region).add_auth(aws_request)
    return dict(aws_request.headers.items())


def converse_body(request: ProbeRequest) -> dict[str, Any]:
    """The Converse body: content blocks per message, system blocks, ``inferenceConfig``."""
    system = [request.system] if request.system else []
    messages: list[dict[str, Any]] = []
    for m in request.chat_messages:
        if m.role == "system":  # Converse has no system role inside messages
            system.append(m.content)
        else:
            messages.append({"role": m.role, "content": [{"text": m.content}]})
    config: dict[str, Any] = {"maxTokens": request.max_tokens, "temperature": request.temperature}
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    body: dict[str, Any] = {"messages": messages, "inferenceConfig": config}
    if system:
        body["system"] = [{"text": text} for text in system]
    if request.top_k is not None:
        # Converse has no top-k in inferenceConfig; models that take one read it from here.
        # Sent rather than dropped, so that a probe never runs with sampling other than it declares.
        body["additionalModelRequestFields"] = {"top_k": request.top_k}
    return body


class _Block(BaseModel):
    text: str | None = None


class _Message(BaseModel):
    role: str
    content: list[_Block]


class _Output(BaseModel):
    message: _Message


class _Usage(BaseModel):
    inputTokens: int | None = None
    outputTokens: int | None = None


class _ConverseResponse(BaseModel):
    output: _Output
    stopReason: str
    usage: _Usage | None = None


def parse_converse(data: Any, completion: Completion) -> None:
    parsed = _ConverseResponse.model_validate(data)
    completion.text = "".join(block.text or "" for block in parsed.output.message.content)
    completion.finish_reason = parsed.stopReason
    if parsed.usage:
        completion.input_tokens = parsed.usage.inputTokens
        completion.output_tokens = parsed.usage.outputTokens


def error_type(response: httpx.Response, data: Any) -> str | None:
    """The Bedrock error name: ``ThrottlingException`` from ``ThrottlingException:http://…`` or ``…#Name``."""
    raw = response.headers.get("x-amzn-errortype")
    if not raw and isinstance(data, dict):
        raw = data.get("__type") or data.get("code")
    if not isinstance(raw, str) or not raw:
        return None
    return raw.split(":", 1)[0].rsplit("#", 1)[-1] or None


class BedrockProvider(Provider):
    """Bedrock Runtime. ``credentials`` replaces the AWS chain (tests, or a caller with its own source)."""

    kind = "bedrock"

    def __init__(self, client: httpx.AsyncClient, credentials: CredentialSource | None = None) -> None:
        super().__init__(client)
        self._source = credentials or default_credentials
        self._credentials: Credentials | None = None
        self._lookup = anyio.Lock()

    def url(self, target: Target, request: ProbeRequest) -> str:
        operation = "invoke" if target.spec.resolved_api_format() == "anthropic" else "converse"
        # The model id is one path segment: ARNs and versioned ids contain '/' and ':', which are
        # percent-encoded (as the AWS SDKs do) and signed in that form.
        return f"{endpoint(target)}/model/{quote(target.spec.model_id, safe='')}/{operation}"

    def headers(self, target: Target) -> dict[str, str]:
        return {"accept": "application/json"}

    def body(self, target: Target, request: ProbeRequest) -> dict[str, Any]:
        if target.spec.resolved_api_format() == "anthropic":
            return cloud_messages_body(request, BEDROCK_ANTHROPIC_VERSION)
        return converse_body(request)

    def parse(self, data: Any, completion: Completion) -> None:
        if isinstance(data, dict) and "output" in data:
            parse_converse(data, completion)
        else:
            parse_message(data, completion)

    async def prepare(self, target: Target, request: ProbeRequest) -> PreparedRequest:
        unsigned = await super().prepare(target, request)
        credentials = await self._frozen_credentials()
        region = target.spec.region or ""  # required by config validation for bedrock
        headers = sigv4_headers(credentials, region, unsigned.url, unsigned.headers, unsigned.content)
        return PreparedRequest(unsigned.url, headers, unsigned.content)

    async def _frozen_credentials(self) -> ReadOnlyCredentials:
        """The current key, secret and token; looked up once, refreshed by botocore when near expiry.

        The lookup and a refresh may read files or call STS / the instance metadata service, so
        both run in a worker thread. A failed lookup is not cached: the next request tries again.
        """
        try:
            if self._credentials is None:
                async with self._lookup:  # one lookup, however many probes start at once
                    if self._credentials is None:
                        self._credentials = await anyio.to_thread.run_sync(self._source)
                        if self._credentials is None:
                            raise PrepareError(NO_CREDENTIALS)
            credentials = self._credentials
            if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
                frozen: ReadOnlyCredentials = await anyio.to_thread.run_sync(
                    credentials.get_frozen_credentials
                )
                return frozen
            return credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError) as exc:
            # botocore's messages name variables and profiles, never key material
            raise PrepareError(f"AWS credentials could not be loaded: {type(exc).__name__}: {exc}") from None

    def classify_response(self, response: httpx.Response, data: Any) -> FailureReason:
        name = error_type(response, data)
        if name in CAPACITY_ERRORS:
            return FailureReason.RATE_LIMITED
        if name in TIMEOUT_ERRORS:
            return FailureReason.TIMEOUT
        if name in SERVER_ERRORS:
            return FailureReason.SERVER_ERROR
        return self.classify_error(response.status_code, data)

    def describe_error(self, response: httpx.Response, data: Any) -> str | None:
        message = None
        if isinstance(data, dict):
            # ``message`` per the service model; the signature layer answers with ``Message``
            message = data.get("message") or data.get("Message")
        name = error_type(response, data)
        if name and isinstance(message, str):
            return f"{name}: {message}"
        return message if isinstance(message, str) else name
