"""Service test bed: a loopback upstream with healthy, corrupt and hanging models, and configs over it.

The upstream's ``model`` field picks the behaviour: ``ok`` answers in English; ``corrupt`` puts
Thai characters in the answer (an output-corruption fault); ``hang`` holds the request until the
test opens :attr:`Upstream.gate`, so a test decides when a "slow" cell answers instead of timing it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from canary.config.loader import Config, load_config
from canary.probing.catalog import Catalog, load_catalog
from tests.loopback import ThreadedServer, serve_in_thread

ANSWERS = {"ok": "Paris is the capital of France.", "corrupt": "Paris is the สวัสดี capital of France."}

PROBES = """
[defaults]
scorers = ["unexpected_script"]
allowed_scripts = ["Latin"]
reference_answer = "Paris"

[[probe]]
id = "capital"
prompt = "What is the capital of France?"
repeat = {repeat}
"""


class Upstream:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = 0
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> JSONResponse:
        model = (await request.json())["model"]
        if model == "hang":
            self.waiting += 1
            try:
                await anyio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
            finally:
                self.waiting -= 1
        text = ANSWERS.get(model, ANSWERS["ok"])
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7},
            }
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, ThreadedServer]]:
    up = Upstream()
    with serve_in_thread(up.app) as server:
        yield up, server
    up.gate.set()


MakeConfig = Callable[..., tuple[Config, Catalog]]

# A [service] section for tests: any free port, quick hand-overs and refreshes, no start spread.
FAST = """port = 0
leader_lease_s = 1
heartbeat_s = 0.5
refresh_s = 0.1
shutdown_grace_s = 5
[service.schedule]
start_spread_s = 0
"""


@pytest.fixture
def make_config(tmp_path: Path, upstream: tuple[Upstream, ThreadedServer]) -> MakeConfig:
    """``make_config({"pool": "model id"}, interval_s=..., service="toml lines", repeat=...)``."""
    server = upstream[1]

    def make(
        cells: dict[str, str], interval_s: float = 3600, service: str = "", repeat: int = 1
    ) -> tuple[Config, Catalog]:
        (tmp_path / "probes").mkdir(exist_ok=True)
        (tmp_path / "probes" / "basic.toml").write_text(PROBES.format(repeat=repeat))
        text = f'probes_dir = "probes"\n[defaults]\ninterval_s = {interval_s}\njitter_s = 0\n'
        text += f"[service]\n{service}\n"
        for pool, model_id in cells.items():
            text += (
                f'[[targets]]\nmodel = "m"\nplatform = "p"\npool = "{pool}"\nprovider = "openai-chat"\n'
                f'base_url = "{server.url}/v1"\nmodel_id = "{model_id}"\ntimeout_s = 30\n'
            )
        path = tmp_path / "canary.toml"
        path.write_text(text)
        config = load_config(path)
        return config, load_catalog(config.probes_dir)

    return make


async def count_runs(engine: AsyncEngine, cell: str, extra: str = "") -> int:
    import sqlalchemy as sa

    async with engine.connect() as conn:
        query = f"SELECT count(*) FROM runs r JOIN targets t ON t.id = r.target_id WHERE t.cell = :c {extra}"
        return int(await conn.scalar(sa.text(query), {"c": cell}) or 0)


async def eventually(check: Callable[[], object], what: str, limit_s: float = 60.0) -> None:
    """Poll ``check`` (sync or async) until true; the limit only turns a hang into a failure."""
    with anyio.fail_after(limit_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await anyio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover
