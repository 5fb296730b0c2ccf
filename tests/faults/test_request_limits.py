"""Request bodies are bounded before authentication, NUL bytes are a 422, and 422s echo little.

Real HTTP on loopback against the service's app (uvicorn in a thread, a real PostgreSQL); the
oversized bodies go over a raw socket, so the test decides how much of them is ever sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import anyio
import httpx
import pytest

from canary.config.sections import VerdictPolicy
from canary.service.api import ApiContext, create_app
from canary.service.limits import MAX_BODY_BYTES
from canary.service.metrics import ServiceMetrics
from canary.storage.engine import async_engine
from tests.loopback import ThreadedServer, serve_in_thread

TOKEN = "limits-t0ken"
CELLS = ["m/p/canary", "m/p/base"]
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture
def server(db_url: str) -> Iterator[ThreadedServer]:
    engine = async_engine(db_url)  # connects only inside the server's own event loop
    ctx = ApiContext(engine, ServiceMetrics(), CELLS, VerdictPolicy(), token=TOKEN)
    with serve_in_thread(create_app(ctx)) as running:
        yield running
    anyio.run(engine.dispose)


def raw_request(server: ThreadedServer, head: str, chunks: Iterable[bytes] = ()) -> tuple[int, bytes]:
    """Send ``head`` then ``chunks`` while the server reads; return the status and body it answers."""
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: the point
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_400_mb_unauthenticated_body_is_refused_413_before_any_is_read(server: ThreadedServer) -> None:
    head = (
        f"POST /api/deploys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {400 * 1024 * 1024}\r\n\r\n"
    )
    status, body = raw_request(server, head)  # not one byte of the body sent: never needed
    assert status == 413 and b"larger than" in body


def test_a_chunked_body_past_the_limit_is_cut_off_with_413(server: ThreadedServer) -> None:
    head = (
        "POST /api/deploys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{AUTH}Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    sent = 0

    def chunks() -> Iterator[bytes]:  # up to 64 MB, but the server stops it after ~1 MB
        nonlocal sent
        for _ in range(1024):
            sent += len(piece)
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    status, body = raw_request(server, head, chunks())
    assert status == 413 and json.loads(body)["detail"].startswith("request body larger than")
    assert sent < 64 * 1024 * 1024  # the connection was closed long before the end


def test_a_422_for_a_huge_field_echoes_only_an_excerpt(server: ThreadedServer) -> None:
    name = "n" * (MAX_BODY_BYTES - 1000)
    body = {"name": name, "canary_cells": ["m/p/canary"], "baseline_cells": ["m/p/base"]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(f"{server.url}/api/deploys", json=body, headers=auth)
    assert response.status_code == 422
    assert len(response.content) < 2000 and "characters)" in response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "name"] and error["type"] == "string_too_long"


@pytest.mark.parametrize(
    "path", ["/api/runs?cell=m%00p", "/api/runs?cell=ok&x%00=1", "/api/deploys/a%00b", "/api/alerts/f%00"]
)
def test_nul_bytes_in_query_or_path_are_a_422_not_a_500(server: ThreadedServer, path: str) -> None:
    response = httpx.get(f"{server.url}{path}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] in ("query", "path")


def test_the_event_loop_answers_while_a_large_authenticated_body_is_arriving(server: ThreadedServer) -> None:
    patterns = json.dumps([f"m/p/{'*' * 400}{i}" for i in range(1000)]).encode()  # ~400 KB, in bounds
    body = b'{"name": "big", "baseline_cells": ["m/p/base"], "canary_cells": ' + patterns + b"}"
    head = (
        f"POST /api/deploys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{AUTH}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    answered: list[float] = []
    half_sent = threading.Event()
    health_done = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        half_sent.set()
        health_done.wait(20)  # the request is mid-body while /healthz is asked
        yield body[len(body) // 2 :]

    def check_health() -> None:
        half_sent.wait(20)
        started = time.monotonic()
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        answered.append(time.monotonic() - started)
        health_done.set()

    checker = threading.Thread(target=check_health)
    checker.start()
    status, response = raw_request(server, head, chunks())
    checker.join()
    assert answered, "/healthz did not answer while the body was arriving"
    assert status == 422 and b"matches no configured cell" in response  # parsed and matched in full
