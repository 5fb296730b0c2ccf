"""The status page in a real browser: Debian's Chromium, headless, against the page on loopback.

The seeded state at a fixed clock (statuskit) makes the page the same on every run, so the
screenshot is compared with a committed reference (a small tolerance for font rendering), the
DOM Chromium built is read for its text, and the health tiles are found by their colours at
their places. Without Chromium the test skips, naming scripts/ensure-chromium.sh. After a
deliberate change to the page, ``CANARY_UPDATE_SCREENSHOTS=1`` rewrites the reference.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import anyio
import pytest
from dashkit import FIRING, PENDING, SICK, STALE, THAI
from fastapi import FastAPI
from pngread import coloured_boxes, differing_fraction, hex_rgb, read_png
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from statuskit import NOW, seed_status

from bench._chromium import CHROMIUM as CHROMIUM_PATH
from bench._chromium import FLAGS as CHROMIUM_FLAGS
from canary.service.status_page import STATUS_COLOURS, install_status_page
from tests.loopback import serve_in_thread

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM = Path(CHROMIUM_PATH)
WINDOW = "--window-size=1200,1500"  # down to the groups' tiles
REFERENCE = Path(__file__).parent / "reference" / "status_page.png"
MAX_DIFFERING = 0.02  # of the pixels; a moved section or a changed colour is far more


async def chromium(*args: str) -> bytes:
    if not await anyio.Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: run scripts/ensure-chromium.sh (installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="canary-chromium-")
    try:
        with anyio.fail_after(90):
            result = await anyio.run_process(
                [str(CHROMIUM), *CHROMIUM_FLAGS, WINDOW, f"--user-data-dir={profile}", *args], check=False
            )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


async def test_chromium_shows_the_page_as_the_reference_screenshot(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed_status(engine)
    # The server thread runs its own event loop: an unpooled engine opens connections in it.
    page_engine = create_async_engine(db_url, poolclass=NullPool)
    app = FastAPI()
    install_status_page(app, lambda: page_engine, clock=lambda: NOW, replica=lambda: "test-host:1")
    shot = tmp_path / "status.png"
    with serve_in_thread(app) as server:
        await chromium(f"--screenshot={shot}", server.url + "/")
        dom = (await chromium("--dump-dom", server.url + "/")).decode()
    await page_engine.dispose()

    # The text on-call reads, as the browser parsed it.
    assert "2 sick" in dom and "1 warning" in dom and "1 no data" in dom and "9 healthy" in dom
    assert f"{FIRING} known_answer 1% -&gt; 30%" in dom and THAI in dom
    assert "1 undelivered" in dom and "no leader" in dom and "rollout-42" in dom
    assert (
        dom.index(f'id="cell-{SICK}"') < dom.index(f'id="cell-{PENDING}"') < dom.index(f'id="cell-{STALE}"')
    )
    assert dom.count('<svg class="spark"') == 12

    # The tiles of the groups with a problem, in their colours, one row per group.
    _, _, rows = read_png(shot)
    boxes = coloured_boxes(rows, {s: hex_rgb(c) for s, c in STATUS_COLOURS.items()}, min_side=24)
    tiles = sorted((top, left, status) for status, left, top, right, _ in boxes if right - left >= 60)
    by_row: dict[int, list[str]] = {}
    for top, _, status in tiles:
        by_row.setdefault(top, []).append(status)
    assert list(by_row.values()) == [["nodata", "sick", "ok"], ["ok", "ok", "sick"], ["ok", "warn", "ok"]]

    if os.environ.get("CANARY_UPDATE_SCREENSHOTS"):
        REFERENCE.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, REFERENCE)
    _, _, reference = read_png(REFERENCE)
    differing = differing_fraction(rows, reference)
    kept = Path(tempfile.gettempdir()) / "canary-status-page-actual.png"
    if differing > MAX_DIFFERING:
        shutil.copyfile(shot, kept)
    assert differing <= MAX_DIFFERING, f"{differing:.1%} of the pixels differ from {REFERENCE}; see {kept}"
