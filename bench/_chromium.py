"""Page-load timing in headless Chromium over the DevTools protocol on a pipe (no extra library).

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands on fd 3 and answer
on fd 4. We navigate to the page, wait for ``Page.loadEventFired`` and read the page's own
Navigation Timing entry, so the figure is the browser's: request start to the load event,
including the server's answer, parsing, layout of the inline SVG, and the first paint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that talks to the network or changes between runs (the browser test too).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
TIMING = (
    "JSON.stringify((e => ({load: e.loadEventEnd, dom: e.domContentLoadedEventEnd,"
    " response: e.responseEnd, ttfb: e.responseStart - e.requestStart, bytes: e.transferSize}))"
    "(performance.getEntriesByType('navigation')[0]))"
)


class DevToolsPipe:
    """One headless Chromium with a fresh profile, driven over ``--remote-debugging-pipe``."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="canary-bench-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 carries the answers
            # Through fresh copies: a pipe end may already be fd 3 or 4, and dup2 onto itself would
            # keep its close-on-exec flag.
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                "--window-size=1200,900",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],  # fmt: skip
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = self._attach()

    def _read_message(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._to_chrome, json.dumps(command).encode() + b"\0")
        while True:
            message = self._read_message(60.0)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout_s: float = 60.0) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self._read_message(timeout_s)
            if message.get("method") == method:
                return message
            self.events.append(message)

    def _attach(self) -> str:
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session: str = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable", session=session)
        self.call("Network.enable", session=session)
        self.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
        return session

    def load(self, url: str) -> dict[str, float]:
        """Navigate to ``url``; the page's navigation timing (ms from navigation start)."""
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=self.session)
        self.wait_event("Page.loadEventFired")
        result = self.call(
            "Runtime.evaluate", {"expression": TIMING, "returnByValue": True}, session=self.session
        )
        timing: dict[str, float] = json.loads(result["result"]["value"])
        return timing

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)
