"""Served-by headers: the first configured header names the pool, the others are evidence only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.config.loader import load_config
from canary.probing.catalog import load_catalog
from canary.probing.runner import run_pass
from tests.loopback import ThreadedServer, serve_in_thread
from tests.upstream import chat_body

pytestmark = pytest.mark.anyio

# The upstream's ``model`` picks the served-by headers it answers with.
HEADERS = {
    "replica-only": {"x-served-replica": "short-7"},
    "long": {"x-served-pool": "long-context", "x-served-replica": "long-3"},
    "short": {"x-served-pool": "short-context", "x-served-replica": "short-7"},
}

PROBES = """
[[probe]]
scorers = ["answered"]
id = "capital"
prompt = "What is the capital of France?"
reference_answer = "Paris"
"""


async def chat(request: Request) -> Response:
    model = (await request.json())["model"]
    return JSONResponse(chat_body(model, False, 0), headers=HEADERS[model])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with serve_in_thread(app) as server:
        yield server


async def test_only_the_first_served_by_header_names_the_pool(
    engine: AsyncEngine, upstream: ThreadedServer, tmp_path: Path
) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "basic.toml").write_text(PROBES)
    text = 'probes_dir = "probes"\n'
    for pool in HEADERS:
        text += f"""
[[targets]]
model = "m"
platform = "p"
pool = "{pool}"
provider = "openai-chat"
base_url = "{upstream.url}/v1"
model_id = "{pool}"
served_by_headers = ["x-served-pool", "x-served-replica"]
expected_pool = "short-context"
"""
    (tmp_path / "canary.toml").write_text(text)
    config = load_config(tmp_path / "canary.toml")
    await run_pass(engine, config.targets, load_catalog(config.probes_dir).probes)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT t.pool, r.served_pool, r.served_by, s.passed AS routed FROM runs r "
                    "JOIN targets t ON t.id = r.target_id "
                    "LEFT JOIN scores s ON s.run_id = r.id AND s.metric = 'routing'"
                )
            )
        ).all()
    by_pool = {r.pool: r for r in rows}
    assert len(rows) == 3
    # Only a replica header: the pool is unknown, so routing is not judged (not a misroute).
    replica_only = by_pool["replica-only"]
    assert replica_only.served_pool is None and replica_only.routed is None
    assert replica_only.served_by == {"x-served-replica": "short-7"}  # still stored as evidence
    # Another pool named by the first header is still a misroute; the expected one passes.
    assert by_pool["long"].served_pool == "long-context" and by_pool["long"].routed is False
    assert by_pool["long"].served_by == HEADERS["long"]
    assert by_pool["short"].served_pool == "short-context" and by_pool["short"].routed is True
