"""An upstream answer holding NUL characters (valid JSON: ``\\u0000``) is stored, not lost.

PostgreSQL text and jsonb cannot hold NUL; before, one such answer failed its whole batch's
insert and the pass's runs were lost. Real HTTP on loopback, a real PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.config.loader import build_config
from canary.probing.catalog import load_catalog
from canary.probing.runner import run_pass
from tests.faults.misbehaving import ONE_PROBE, REPEAT, FixedUpstream
from tests.loopback import serve_in_thread
from tests.upstream import chat_body

pytestmark = pytest.mark.anyio


async def test_an_answer_with_nul_characters_is_stored_with_them_replaced(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "one.toml").write_text(ONE_PROBE)
    body = chat_body("ok", False, 0)
    body["choices"][0]["message"]["content"] = "Paris\u0000 is the capital"
    with serve_in_thread(FixedUpstream(200, body)) as server:
        spec = {"model": "m", "platform": "p", "pool": "a", "provider": "openai-chat",
                "base_url": f"{server.url}/v1", "model_id": "ok"}  # fmt: skip
        config = build_config({"targets": [spec]}, "test.toml")
        summary = await run_pass(engine, config.targets, load_catalog(tmp_path).probes)
    assert summary.stored == REPEAT
    async with engine.connect() as conn:
        texts = (await conn.execute(sa.text("SELECT output_text FROM runs"))).scalars().all()
    assert texts == ["Paris\ufffd is the capital"] * REPEAT
