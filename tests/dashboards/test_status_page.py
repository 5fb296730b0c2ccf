"""The status page at ``/`` of the service shows the seeded state, and renders in a real browser.

The browser test runs Debian's Chromium headless against the page served on loopback, then
checks the screenshot's pixels (the matrix cells in their health colours, at their places in
the grid) and the DOM Chromium built. Without Chromium it fails: run scripts/ensure-chromium.sh.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from dashkit import EXPECTED_STATUS, FIRING, SICK, STALE, THAI, Seeded, seed
from fastapi import FastAPI
from pngread import coloured_boxes, hex_rgb, read_png
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from canary.config.sections import VerdictPolicy
from canary.service.api import ApiContext, create_app
from canary.service.metrics import ServiceMetrics
from canary.service.status_page import STATUS_COLOURS, install_status_page
from tests.loopback import serve_in_thread

pytestmark = pytest.mark.anyio

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Matrix layout: rows sorted by model then platform, pool columns sorted by name.
ROWS = [
    ("canary-large", "cloud-b"),
    ("canary-large", "first-party"),
    ("canary-small", "cloud-a"),
    ("canary-small", "cloud-b"),
    ("canary-small", "first-party"),
]
COLUMNS = ["front-door", "long-context", "short-context"]


@pytest.fixture
async def seeded(engine: AsyncEngine) -> AsyncIterator[Seeded]:
    yield await seed(engine, datetime.now(UTC).replace(microsecond=0))


def expected_grid(seeded: Seeded) -> dict[tuple[int, int], str]:
    grid = {}
    for cell in seeded.ids:
        model, platform, pool = cell.split("/")
        grid[(ROWS.index((model, platform)), COLUMNS.index(pool))] = EXPECTED_STATUS.get(cell, "ok")
    return grid


async def test_the_service_root_serves_the_status_page_from_the_views(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    ctx = ApiContext(engine=engine, metrics=ServiceMetrics(), cells=list(seeded.ids), policy=VerdictPolicy())
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://canary") as client:
        response = await client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for cell in seeded.ids:
        assert f'data-cell="{cell}" data-status="{EXPECTED_STATUS.get(cell, "ok")}"' in page
    assert f"<mark>{THAI}</mark>" in page  # the offending characters of the sick cell
    assert "rollout-42" in page and ">FAIL<" in page
    assert f"{FIRING}: known_answer worse than its history" in page
    assert "<script" not in page and "http://" not in page.split("<body>")[1]  # nothing to fetch


async def test_an_empty_database_gives_a_page_that_says_so(engine: AsyncEngine) -> None:
    app = FastAPI()
    install_status_page(app, lambda: engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://canary") as client:
        page = (await client.get("/")).text
    assert "No cells yet." in page and "No open alerts." in page


def test_values_from_the_database_are_escaped() -> None:
    from canary.service.status_page import StatusState, render

    state = StatusState(
        health=[
            {
                "cell": "m/<p>/x",
                "model": "m",
                "platform": "<p>",
                "pool": "x",
                "status": "sick",
                "worst_metric": "<script>alert(1)</script>",
                "recent_rate": 0.5,
                "baseline_rate": 0.0,
                "recent_runs": 10,
                "recent_failures": 5,
                "open_alerts": 0,
            }
        ]
    )
    page = render(state)
    assert "<script>" not in page and "&lt;script&gt;" in page and "m / &lt;p&gt;" in page


async def chromium(*args: str) -> bytes:
    if not await anyio.Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run scripts/ensure-chromium.sh (installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="canary-chromium-")
    try:
        with anyio.fail_after(90):
            result = await anyio.run_process(
                [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], check=False
            )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


@pytest.mark.slow
async def test_chromium_renders_the_matrix_in_health_colours(
    db_url: str, seeded: Seeded, tmp_path: Path
) -> None:
    # The server thread runs its own event loop: an unpooled engine opens connections in it.
    page_engine = create_async_engine(db_url, poolclass=NullPool)
    app = FastAPI()
    install_status_page(app, lambda: page_engine)
    shot = tmp_path / "status.png"
    with serve_in_thread(app) as server:
        await chromium(f"--screenshot={shot}", "--window-size=1200,900", server.url + "/")
        dom = (await chromium("--dump-dom", server.url + "/")).decode()

    assert f'data-cell="{SICK}" data-status="sick"' in dom
    assert f'data-cell="{STALE}" data-status="nodata"' in dom
    assert THAI in dom

    colours = {status: hex_rgb(colour) for status, colour in STATUS_COLOURS.items()}
    _, _, rows = read_png(shot, max_rows=700)
    boxes = coloured_boxes(rows, colours, min_side=40)
    # Place every box in the grid by the order of its left and top edges.
    lefts = sorted({left for _, left, _, _, _ in boxes})
    tops = sorted({top for _, _, top, _, _ in boxes})
    assert len(lefts) == len(COLUMNS) and len(tops) == len(ROWS), (lefts, tops)
    seen = {(tops.index(top), lefts.index(left)): status for status, left, top, _, _ in boxes}
    assert seen == expected_grid(seeded)
