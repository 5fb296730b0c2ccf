"""Helpers for alert tests: a scriptable loopback receiver and hand-made findings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from canary.detection.episodes import Finding
from tests.loopback import serve_in_thread

NOW = datetime(2025, 8, 29, 12, 0, tzinfo=UTC)


@dataclass
class Sink:
    """A real HTTP receiver on loopback. ``script`` holds the next answers: a status code, or
    ``"hang"`` (no answer for ``hang_s`` or until released). Unscripted requests get 200."""

    script: list[int | str] = field(default_factory=list)
    hang_s: float = 2.0
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((dict(request.headers), body))
        action = self.script.pop(0) if self.script else 200
        if action == "hang":
            # The event lives in the test's thread; wait for it in a worker thread, not the loop.
            await anyio.to_thread.run_sync(self.released.wait, self.hang_s)
            return Response(status_code=200)  # too late: the sender has given up waiting
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if action == 200:
            self.accepted.append(json.loads(body))
        return Response(status_code=int(action))

    def wait_for_requests(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink saw {len(self.requests)} requests, expected {count}")
            time.sleep(0.02)


@contextmanager
def running_sink(**kwargs: Any) -> Iterator[Sink]:
    sink = Sink(**kwargs)
    app = Starlette(routes=[Route("/hook", sink.hook, methods=["POST"])])
    with serve_in_thread(app) as server:
        sink.url = f"{server.url}/hook"
        try:
            yield sink
        finally:
            sink.released.set()


def make_finding(target_id: int, cell: str, metric: str = "unexpected_script", p: float = 1e-9) -> Finding:
    return Finding(
        target_id=target_id, cell=cell, metric=metric, kind="self", baseline_rate=0.003, observed_rate=0.16,
        effect=0.157, effect_ci_low=0.1, effect_ci_high=0.24, n_baseline=2880, baseline_failures=9,
        n_observed=110, failures=18, statistic=43.4, threshold=6.4, p_value=p, mde=0.055,
        change_point_at=NOW, deploy_ids=[], sample_output="Paris สวัสดี",
        message=f"{cell} {metric} [self]: 16% failing (18/110) vs baseline 0.31% (9/2880)", created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip
