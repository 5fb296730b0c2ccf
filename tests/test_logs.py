"""uvicorn's own log lines (access and error) come out as the same JSON as every other line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A process as the service sets itself up: canary's logging, then uvicorn with canary's log config
# (in a process of its own, so that no test runner's handlers share its stderr).
SERVER = """
import socket, httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from canary.logs import UVICORN_LOG_CONFIG, configure_logging
from tests.loopback import serve_in_thread

async def ok(request):
    return PlainTextResponse("ok")

async def boom(request):
    raise RuntimeError("handler bug")

configure_logging("INFO", json=True)
app = Starlette(routes=[Route("/ok", ok), Route("/boom", boom)])
options = {"log_config": UVICORN_LOG_CONFIG, "access_log": True, "log_level": "info"}
with serve_in_thread(app, **options) as server:
    assert httpx.get(f"{server.url}/ok?x=1").status_code == 200
    assert httpx.get(f"{server.url}/boom").status_code == 500
    with socket.create_connection((server.host, server.port)) as raw:  # not HTTP at all
        raw.sendall(b"\\x16\\x03\\x01 garbage\\r\\n\\r\\n")
        raw.recv(1024)
"""


def test_uvicorn_access_and_error_lines_are_structured_json() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SERVER], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON: no plain-text handler left
    access = [e for e in events if e["logger"] == "uvicorn.access"]
    assert {(e["method"], e["path"], e["status"]) for e in access} == {
        ("GET", "/ok?x=1", 200),
        ("GET", "/boom", 500),
    }
    assert all({"timestamp", "level", "client"} <= set(e) for e in access)
    errors = [e for e in events if e["logger"] == "uvicorn.error"]
    assert any(
        "Exception in ASGI application" in e["event"] and "handler bug" in e["exception"] for e in errors
    )
    assert any("Invalid HTTP request" in e["event"] and e["level"] == "warning" for e in errors)
