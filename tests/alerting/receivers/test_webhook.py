"""Generic webhook receiver: Alertmanager v4 body, timestamped HMAC signature, status classification."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from canary.alerting.receivers import WebhookReceiver, build_receivers
from canary.alerting.receivers.webhook import SIGNATURE_HEADER, sign
from canary.config.receivers import ReceiverSpec, resolve_receivers
from tests.alerting.kit import running_sink

pytestmark = pytest.mark.anyio

NOTICE = {
    "status": "firing",
    "fingerprint": "0123456789abcdef",
    "labels": {"alertname": "CanaryQualityRegression", "cell": "m/p/a", "metric": "routing", "pool": "a"},
    "annotations": {"summary": "m/p/a routing [self]: 12% failing (18/150) vs baseline 0.4% (4/1000)"},
    "startsAt": "2025-08-29T12:00:00+00:00",
    "endsAt": None,
    "generatorURL": "http://canary.test/findings/1",
    "externalURL": "http://canary.test",
}


README = Path(__file__).resolve().parents[3] / "README.md"


def receiver(url: str, secret: str | None = "s3cret") -> WebhookReceiver:
    return WebhookReceiver(ReceiverSpec(name="hook", kind="webhook", url=url, timeout_s=1), url, secret)


def readme_verify() -> Callable[..., bool]:
    """The verification snippet exactly as the README documents it."""
    (snippet,) = re.findall(r"```python\n(import hashlib.*?def verify.*?)```", README.read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


async def test_the_body_is_alertmanager_v4_and_the_signature_verifies() -> None:
    with running_sink() as sink:
        async with httpx.AsyncClient() as client:
            result = await receiver(sink.url).send(NOTICE, client)
    assert result.ok and result.http_status == 200 and result.duration_ms > 0
    headers, body = sink.requests[0]
    header = headers[SIGNATURE_HEADER.lower()]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert abs(int(header[2:].split(",")[0]) - time.time()) < 60  # signed at sending
    assert readme_verify()(header, body, "s3cret")
    message = json.loads(body)
    assert message["version"] == "4" and message["status"] == "firing" and message["receiver"] == "hook"
    assert message["groupLabels"] == {
        "alertname": "CanaryQualityRegression",
        "cell": "m/p/a",
        "metric": "routing",
    }
    assert message["groupKey"] == '{}:{alertname="CanaryQualityRegression", cell="m/p/a", metric="routing"}'
    (alert,) = message["alerts"]
    assert alert["fingerprint"] == "0123456789abcdef" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["annotations"]["summary"].startswith("m/p/a routing")


def test_the_readme_check_rejects_a_replayed_old_timestamp_and_a_forged_one() -> None:
    verify = readme_verify()
    body = b'{"status":"firing"}'
    now = int(time.time())
    assert verify(sign(body, "s3cret", now), body, "s3cret")
    captured = sign(body, "s3cret", now - 600)  # a genuine request, replayed ten minutes later
    assert not verify(captured, body, "s3cret")
    forged = captured.replace(f"t={now - 600}", f"t={now}")  # the timestamp is signed: no refresh
    assert not verify(forged, body, "s3cret")
    assert not verify(sign(body, "s3cret", now), body + b" ", "s3cret")  # the body is signed
    assert not verify(sign(body, "other", now), body, "s3cret")
    assert not verify("sha256=" + "0" * 64, body, "s3cret")  # the old body-only form


async def test_without_a_secret_there_is_no_signature_header() -> None:
    with running_sink() as sink:
        async with httpx.AsyncClient() as client:
            assert (await receiver(sink.url, None).send(NOTICE, client)).ok
    assert SIGNATURE_HEADER.lower() not in sink.requests[0][0]


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (401, True), (403, True), (400, True),
                                                   (500, False), (503, False), (429, False)])  # fmt: skip
async def test_client_errors_are_permanent_and_server_errors_are_retried(
    status: int, permanent: bool
) -> None:
    with running_sink(script=[status]) as sink:
        async with httpx.AsyncClient() as client:
            result = await receiver(sink.url).send(NOTICE, client)
    assert not result.ok and result.http_status == status and result.permanent is permanent


async def test_a_dead_receiver_is_a_retryable_result_that_does_not_quote_the_url() -> None:
    url = "http://127.0.0.1:9/hook/T0SECRET"
    async with httpx.AsyncClient() as client:
        result = await receiver(url).send(NOTICE, client)
    assert not result.ok and not result.permanent and result.error
    assert "T0SECRET" not in result.error and "T0SECRET" not in repr(receiver(url))


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from canary.errors import SecretError

    spec = ReceiverSpec(
        name="hook", kind="webhook", url="env:CANARY_TEST_HOOK_URL", secret="env:CANARY_TEST_HOOK_KEY"
    )
    with pytest.raises(
        SecretError, match=r"alerts.receivers\[0\].url: environment variable CANARY_TEST_HOOK_URL"
    ):
        resolve_receivers([spec], "canary.toml")
    monkeypatch.setenv("CANARY_TEST_HOOK_URL", "http://127.0.0.1:9/x")
    monkeypatch.setenv("CANARY_TEST_HOOK_KEY", "k")
    (built,) = build_receivers(resolve_receivers([spec], "canary.toml")).values()
    assert "127.0.0.1" not in repr(built)
