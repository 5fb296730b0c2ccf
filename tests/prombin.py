"""Debian's Prometheus, promtool and Alertmanager, run by the tests as real processes on loopback.

``scripts/ensure-prometheus.sh`` installs them (``make test`` runs it); without them a test skips,
naming the script. Each server gets a free loopback port, its own data directory, and is stopped
when the test ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

INSTALL = "sh scripts/ensure-prometheus.sh"
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def binary(name: str) -> str:
    """The path of ``name`` on PATH or among its Debian package's files; skips when not installed."""
    found = shutil.which(name)
    if found:
        return found
    listed = subprocess.run(["dpkg", "-L", PACKAGES[name]], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        if line.endswith(f"/bin/{name}") and Path(line).is_file():
            return line
    pytest.skip(f"{name} is not installed: run `{INSTALL}` (Debian package {PACKAGES[name]})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running(name: str, args: list[str], log: Path, ready_path: str = "/-/ready") -> Iterator[Server]:
    """Start ``name`` with ``args`` plus a loopback ``--web.listen-address``; wait until it is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary(name), *args, f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 30 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Server(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``check`` until it returns true; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
