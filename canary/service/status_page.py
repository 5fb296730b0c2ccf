"""The built-in status page at ``GET /``: which cell is sick, for people without Grafana.

One server-rendered HTML page with inline CSS (the page must work on a closed network, so no
CDN and no script): the health matrix (model / platform rows × pool columns, coloured by
status), open alerts, the latest deploy verdicts, and the latest failing samples of every cell
that is not healthy, with the offending characters or syntax error. It reads the same ``v_*``
views as the Grafana dashboards, so both always agree. The page reloads itself every minute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncEngine

# Solid colours, also checked pixel by pixel in the browser test.
STATUS_COLOURS = {"ok": "#2e7d32", "warn": "#ef6c00", "sick": "#c62828", "nodata": "#9e9e9e"}
STATUS_LABELS = {"ok": "healthy", "warn": "warning", "sick": "sick", "nodata": "no data"}
SAMPLES_PER_CELL = 5

HEALTH_SQL = """
SELECT cell, model, platform, pool, status, worst_metric, recent_rate, baseline_rate, recent_runs,
       recent_failures, open_alerts
FROM v_cell_health ORDER BY model, platform, pool
"""
ALERTS_SQL = """
SELECT state, cell, metric, started_at, summary FROM v_open_alerts
ORDER BY state = 'firing' DESC, started_at LIMIT 100
"""
VERDICTS_SQL = """
SELECT name, id, verdict, status, reason, started_at, failed_metrics, metrics FROM v_deploy_verdicts
WHERE NOT annotation_only ORDER BY started_at DESC LIMIT 10
"""
# Per unhealthy cell, its latest failures (the partial index on failed scores makes each cheap).
SAMPLES_SQL = f"""
SELECT f.time, f.cell, f.metric, f.probe_id, f.offending, f.explanation, f.output
FROM v_cell_health h
CROSS JOIN LATERAL (
    SELECT * FROM v_failed_samples s
    WHERE s.target_id = h.target_id AND s.time > now() - interval '24 hours'
    ORDER BY s.time DESC LIMIT {SAMPLES_PER_CELL}
) f
WHERE h.status IN ('sick', 'warn')
ORDER BY h.severity DESC, f.cell, f.time DESC
"""


@dataclass
class StatusState:
    """What the page shows, read in one go."""

    health: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def load_status(engine: AsyncEngine) -> StatusState:
    """Read the views (one read-only connection, four queries)."""
    state = StatusState()
    async with engine.connect() as conn:
        for name, sql in (
            ("health", HEALTH_SQL),
            ("alerts", ALERTS_SQL),
            ("verdicts", VERDICTS_SQL),
            ("samples", SAMPLES_SQL),
        ):
            rows = (await conn.execute(sa.text(sql))).mappings().all()
            setattr(state, name, [dict(r) for r in rows])
    return state


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_matrix(health: Sequence[dict[str, Any]]) -> str:
    """Rows ``model / platform``, columns pools; a missing (model, platform, pool) is an empty cell."""
    pools = sorted({h["pool"] for h in health})
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for h in health:
        rows.setdefault((h["model"], h["platform"]), {})[h["pool"]] = h
    head = "".join(f"<th>{_e(p)}</th>" for p in pools)
    body = []
    for (model, platform), by_pool in rows.items():
        tds = []
        for pool in pools:
            entry = by_pool.get(pool)
            if entry is None:
                tds.append('<td class="cell none"></td>')
                continue
            status = entry["status"]
            detail = ""
            if status in ("sick", "warn") and entry["worst_metric"]:
                detail = _e(entry["worst_metric"])
                if entry["recent_rate"] is not None:
                    detail += f" {_rate(entry['recent_rate'])} (was {_rate(entry['baseline_rate'])})"
            alerts = f" · {entry['open_alerts']} alert(s)" if entry["open_alerts"] else ""
            tds.append(
                f'<td class="cell {status}" data-cell="{_e(entry["cell"])}" data-status="{status}"'
                f' title="{_e(entry["cell"])}"><b>{STATUS_LABELS[status]}</b>'
                f"<small>{detail}{alerts}</small></td>"
            )
        body.append(f'<tr><th class="row">{_e(model)} / {_e(platform)}</th>{"".join(tds)}</tr>')
    return (
        f'<table class="matrix" id="matrix"><thead><tr><th>model / platform</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="list" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(state: StatusState) -> str:
    """The whole page as HTML; every value from the database is escaped."""
    counts = {s: sum(1 for h in state.health if h["status"] == s) for s in STATUS_COLOURS}
    summary = " · ".join(
        f'<span class="tag {s}">{counts[s]} {STATUS_LABELS[s]}</span>' for s in STATUS_COLOURS
    )
    alerts = _table(
        "alerts",
        ["state", "cell", "metric", "since", "summary"],
        [
            [
                f'<span class="tag {"sick" if a["state"] == "firing" else "warn"}">{_e(a["state"])}</span>',
                _e(a["cell"]),
                _e(a["metric"]),
                _time(a["started_at"]),
                _e(a["summary"]),
            ]
            for a in state.alerts
        ],
        "No open alerts.",
    )
    verdict_class = {"PASS": "ok", "FAIL": "sick", "INCONCLUSIVE": "warn", "PENDING": "nodata"}
    verdicts = _table(
        "verdicts",
        ["deploy", "verdict", "started", "failed metrics", "reason"],
        [
            [
                f"{_e(v['name'])} <small>{_e(v['id'])}</small>",
                f'<span class="tag {verdict_class.get(v["verdict"], "nodata")}">{_e(v["verdict"])}</span>',
                _time(v["started_at"]),
                f"{v['failed_metrics']} / {v['metrics']}",
                _e(v["reason"]),
            ]
            for v in state.verdicts
        ],
        "No deploy verdicts yet.",
    )
    samples = _table(
        "samples",
        ["time", "cell", "metric", "probe", "offending", "why", "output"],
        [
            [
                _time(s["time"]),
                _e(s["cell"]),
                _e(s["metric"]),
                _e(s["probe_id"]),
                f"<mark>{_e(s['offending'])}</mark>",
                _e(s["explanation"]),
                f"<code>{_e(s['output'])}</code>",
            ]
            for s in state.samples
        ],
        "No failing samples on unhealthy cells.",
    )
    colours = "".join(f".{s}{{background:{c};color:#fff}}" for s, c in STATUS_COLOURS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="60">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>canary status</title>
<style>
body{{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:24px;color:#1d1d1d;background:#fff}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:28px 0 8px}}
.meta{{color:#555;font-size:13px}}
table{{border-collapse:separate;border-spacing:4px}}
.matrix th{{text-align:left;font-weight:600;padding:4px 8px}}
.matrix td.cell{{width:170px;height:56px;padding:6px 10px;vertical-align:middle;border-radius:4px}}
.matrix td.cell b{{display:block;font-size:15px}} .matrix td.cell small{{font-size:12px}}
.matrix td.none{{background:#f3f3f3}}
.list{{border-spacing:0;font-size:13px}}
.list th,.list td{{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}}
.tag{{padding:1px 6px;border-radius:3px;font-size:12px;font-weight:600}}
mark{{background:#ffe0e0;color:#b00020;font-weight:600}} code{{white-space:pre-wrap;font-size:12px}}
.empty{{color:#555}}
{colours}
</style></head>
<body>
<h1>canary status</h1>
<p class="meta">{summary} · generated {_time(state.generated_at)}
· last 15 minutes against the previous 24 hours; open alerts override</p>
<h2>Health by cell</h2>
{render_matrix(state.health) if state.health else '<p class="empty" id="matrix">No cells yet.</p>'}
<h2>Open alerts</h2>
{alerts}
<h2>Latest deploy verdicts</h2>
{verdicts}
<h2>Failing samples on unhealthy cells</h2>
{samples}
</body></html>
"""


def install_status_page(app: FastAPI, engine_getter: Callable[[], AsyncEngine]) -> None:
    """Serve the status page at ``GET /`` on ``app`` (``engine_getter`` is called per request)."""

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def status_page() -> HTMLResponse:
        state = await load_status(engine_getter())
        return HTMLResponse(render(state), headers={"Cache-Control": "no-store"})
