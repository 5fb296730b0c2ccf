"""The status page at ``/`` of the service shows the seeded state at the service's clock.

The browser half (screenshot, DOM in Chromium) is in test_status_page_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from dashkit import EXPECTED_STATUS, FIRING, PENDING, SICK, STALE, THAI, Seeded, all_cells, seed
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from statuskit import NOW, RETRYING_ERROR, seed_status

from canary.config.sections import VerdictPolicy
from canary.service.api import ApiContext, create_app
from canary.service.health import CellHealth, MetricCounts, OpenAlert
from canary.service.identity import replica_name
from canary.service.leadership import LeaderLease
from canary.service.membership import Membership
from canary.service.metrics import ServiceMetrics
from canary.service.status_page import install_status_page, render
from canary.service.status_queries import EquivalenceRow, StatusData, load_status
from canary.storage.tables import FindingRow
from tests.conftest import create_test_database, drop_database

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def seeded_db(pg_server: str) -> AsyncIterator[tuple[AsyncEngine, Seeded]]:
    """One seeded database for the tests that only read it (seeding takes seconds)."""
    url = create_test_database(pg_server)
    engine = create_async_engine(url, poolclass=NullPool)  # no connection outlives a test's loop
    try:
        yield engine, await seed_status(engine)
    finally:
        await engine.dispose()
        drop_database(pg_server, url)


async def get_page(app: FastAPI) -> str:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://canary") as client:
        response = await client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    return response.text


def page_app(engine: AsyncEngine) -> FastAPI:
    app = FastAPI()
    install_status_page(app, lambda: engine, clock=lambda: NOW, replica=lambda: "test-host:1")
    return app


async def test_the_service_root_serves_the_page_at_the_services_clock(
    seeded_db: tuple[AsyncEngine, Seeded],
) -> None:
    engine, seeded = seeded_db
    ctx = ApiContext(
        engine=engine,
        metrics=ServiceMetrics(),
        cells=list(seeded.ids),
        policy=VerdictPolicy(),
        clock=lambda: NOW,
    )
    page = await get_page(create_app(ctx))
    # Every cell: a tile in the groups with a problem, else its pool's name in the collapsed list.
    tiles = dict(re.findall(r'data-cell="([^"]+)" data-status="(\w+)" title', page))
    healthy = page.split('<details id="healthy">')[1].split("</details>")[0]
    assert "4 healthy</span> in 2 model / platform groups" in healthy
    for cell in seeded.ids:
        if cell in tiles:
            assert tiles[cell] == EXPECTED_STATUS.get(cell, "ok")
        else:
            model, platform, pool = cell.split("/")
            assert cell not in EXPECTED_STATUS
            assert re.search(f"{model} / {platform}</b>: [^<]*{pool}", healthy)
    assert len(tiles) == len(seeded.ids) - 4
    assert "2026-11-30 03:07 UTC" in page
    assert "<script" not in page and "http://" not in page.split("<body>")[1]  # nothing to fetch


async def test_unhealthy_cells_come_first_sick_then_warning_then_silent(
    seeded_db: tuple[AsyncEngine, Seeded],
) -> None:
    engine, seeded = seeded_db
    page = await get_page(page_app(engine))
    cards = re.findall(
        r'<section class="card \w+-card" id="cell-([^"]+)" data-cell="[^"]+" data-status="(\w+)"', page
    )
    assert cards == [(FIRING, "sick"), (SICK, "sick"), (PENDING, "warn"), (STALE, "nodata")]
    sick_card = page.split(f'id="cell-{SICK}"')[1].split("</section>")[0]
    # The sick metric first, with its sparkline, its rate now and its baseline; then the others.
    assert sick_card.count('<svg class="spark"') == 3
    assert re.search(r"<th>unexpected_script</th>.*?class=\"now out\".*?71\.4%", sick_card)
    assert "unexpected_script 71.4% in 15 min (baseline 0.0%)" in sick_card
    assert f"<mark>{THAI}</mark>" in sick_card  # its latest failing sample, with the offending text
    stale_card = page.split(f'id="cell-{STALE}"')[1].split("</section>")[0]
    assert "no scores in the last 15 minutes" in stale_card


async def test_incidents_show_their_one_line_evidence_and_link(seeded_db: tuple[AsyncEngine, Seeded]) -> None:
    engine, seeded = seeded_db
    async with engine.connect() as conn:
        finding = await conn.scalar(sa.select(FindingRow.id))
    incidents = (await get_page(page_app(engine))).split('id="alerts"')[1].split("</table>")[0]
    rows = incidents.split("<tr>")[2:]
    assert "firing" in rows[0] and f"{FIRING} known_answer 1% -&gt; 30%" in rows[0]
    assert f'href="api/findings/{finding}"' in rows[0] and "20 min ago" in rows[0]
    assert "pending" in rows[1] and f"{PENDING}: determinism worse than its history" in rows[1]
    assert f'href="api/alerts/{PENDING}:determinism"' in rows[1]


async def test_deploys_show_their_verdicts(seeded_db: tuple[AsyncEngine, Seeded]) -> None:
    engine, seeded = seeded_db
    deploys = (await get_page(page_app(engine))).split('id="verdicts"')[1].split("</table>")[0]
    names = re.findall(r"<td>(rollout-\d+) <small>", deploys)
    assert names == ["rollout-43", "rollout-42", "rollout-41"]  # newest first; no annotation
    assert re.search(r"rollout-42.*?>FAIL<.*?1 / 3", deploys)
    assert re.search(r"rollout-43.*?>PENDING<", deploys)


async def test_undelivered_notifications_show_as_the_outbox_backlog(
    seeded_db: tuple[AsyncEngine, Seeded],
) -> None:
    engine, seeded = seeded_db
    outbox = (await get_page(page_app(engine))).split('id="outbox"')[1].split("</div>")[0]
    assert "1 undelivered" in outbox and "oldest 12 min ago" in outbox and "1 given up in 24 h" in outbox
    assert f"pager: 1 pending, 0 given up — last error: <code>{RETRYING_ERROR}</code>" in outbox
    assert "chat: 0 pending, 1 given up" in outbox


async def test_each_cell_shows_its_latest_equivalence_finding(seeded_db: tuple[AsyncEngine, Seeded]) -> None:
    engine, seeded = seeded_db
    async with engine.connect() as conn:
        finding = await conn.scalar(sa.select(FindingRow.id).where(FindingRow.kind == "equivalence"))
    table = (await get_page(page_app(engine))).split('id="equivalence"')[1].split("</table>")[0]
    rows = table.split("<tr>")[2:]
    assert len(rows) == 1 and f'href="#cell-{FIRING}"' in rows[0] and "equivalence.forced" in rows[0]
    assert ">different<" in rows[0] and "0.019 nats/token" in rows[0] and "n=426" in rows[0]
    assert f'href="api/findings/{finding}"' in rows[0]


def test_open_equivalence_findings_come_first_and_resolved_ones_say_when() -> None:
    def row(cell: str, metric: str, effect: float, resolved: datetime | None) -> EquivalenceRow:
        since = NOW - timedelta(hours=3)
        return EquivalenceRow(
            7, cell, metric, resolved is None, effect, "mmd_betting", 1e-7, 236, since, resolved
        )

    rows = [
        row("m/a/x", "equivalence.sampled", 0.31, None),
        row("m/b/y", "equivalence.greedy", 0.5, NOW - timedelta(hours=2)),
    ]
    page = render(StatusData(now=NOW, equivalence=rows))
    table = page.split('id="equivalence"')[1].split("</table>")[0].split("<tr>")[2:]
    assert "m/a/x" in table[0] and ">different<" in table[0] and "+0.31 nearer its own samples" in table[0]
    assert "m/b/y" in table[1] and "resolved 2 h ago" in table[1] and "+0.50 divergence rate" in table[1]
    assert "No equivalence findings in the last 7 days." in render(StatusData(now=NOW))


class NoScheduler:
    def set_cells(self, cells: set[str], now: datetime | None = None) -> None:
        self.cells = cells

    def running_cells(self) -> set[str]:
        return set()


async def test_the_leader_and_the_live_replicas_are_read_from_membership(engine: AsyncEngine) -> None:
    page = await get_page(page_app(engine))
    assert "no leader" in page and "replicas (0): none connected" in page
    member = Membership(engine, "r1", ["m/p/a", "m/p/b"], 30.0, ServiceMetrics())
    await member.tick(NoScheduler())
    lease = LeaderLease(engine, "r1", 30.0)
    assert await lease.try_take()
    page = await get_page(page_app(engine))
    assert f"leader <b>{replica_name()}</b>" in page
    assert f"replicas (1): {replica_name()} (2 cells)" in page
    await lease.release()
    assert "no leader" in await get_page(page_app(engine))
    await member.leave()
    assert "replicas (0): none connected" in await get_page(page_app(engine))


async def test_the_page_agrees_with_the_grafana_health_view(engine: AsyncEngine) -> None:
    await seed(engine, datetime.now(UTC).replace(microsecond=0))
    async with engine.connect() as conn:  # now() is the transaction's: the view and the page share it
        db_now = await conn.scalar(sa.text("SELECT now()"))
        view = (await conn.execute(sa.text("SELECT cell, status, worst_metric FROM v_cell_health"))).all()
    data = await load_status(engine, db_now)
    assert {(c.cell, c.status, c.worst_metric) for c in data.cells} == {tuple(r) for r in view}
    assert len(view) == len(all_cells())


async def test_an_empty_database_gives_a_page_that_says_so(engine: AsyncEngine) -> None:
    page = await get_page(page_app(engine))
    assert "No cells yet." in page and "No open alerts." in page and "No deploy verdicts yet." in page
    assert "0 undelivered notifications" in page


def test_values_from_the_database_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    alert = OpenAlert("m/<p>/x", evil, "firing", NOW, evil, evil, f"api/alerts/{evil}")
    metrics = (MetricCounts(evil, 10, 5, 0, 0),)
    cell = CellHealth(1, "m/<p>/x", "m", "<p>", "x", "sick", evil, None, None, metrics, (alert,))
    page = render(StatusData(now=NOW, cells=[cell], alerts=[alert]))
    assert "<script>" not in page and "&lt;script&gt;" in page and "m / &lt;p&gt;" in page
