"""The built-in status page at ``GET /``: what on-call opens at 3 a.m., without Grafana.

One server-rendered HTML page with inline CSS and inline SVG (it must work on a closed network
and without JavaScript: no CDN, no script). Top to bottom: the count of cells per status, the
leader and the replicas, the outbox backlog; open incidents with their one-line evidence and a
link to it; one card per unhealthy cell (sick, then warning, then silent) with a sparkline of
each metric's hourly failure rate against its baseline band and its latest failing samples;
every cell by model and platform, the groups with a problem first and the healthy ones
collapsed into one line each; the latest deploys with their verdicts; per cell, its latest
equivalence finding (is the model on this pool its peers' model?). The page reloads itself
every minute. Reads are in :mod:`canary.service.status_queries`, the health rule in
:mod:`canary.service.health`, the SVG in :mod:`canary.service.sparkline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from canary.service.health import CellHealth, Group, attention_order, groups, status_counts
from canary.service.identity import replica_name
from canary.service.sparkline import sparkline_svg
from canary.service.status_queries import (
    DETAILED_CELLS,
    Backlog,
    BaselineCache,
    EquivalenceRow,
    Hourly,
    Replica,
    StatusData,
    load_status,
)

# Solid colours, also checked pixel by pixel in the browser test.
STATUS_COLOURS = {"sick": "#c62828", "warn": "#ef6c00", "nodata": "#9e9e9e", "ok": "#2e7d32"}
STATUS_LABELS = {"sick": "sick", "warn": "warning", "nodata": "no data", "ok": "healthy"}
VERDICT_CLASS = {"PASS": "ok", "FAIL": "sick", "INCONCLUSIVE": "warn", "PENDING": "nodata"}


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return ""
    minutes = max(0, int((now - value).total_seconds() // 60))
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago" if minutes < 48 * 60 else f"{minutes // 1440} d ago"


def _tag(status: str, text: str) -> str:
    return f'<span class="tag {status}">{_e(text)}</span>'


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="list" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_service(
    replicas: Sequence[Replica], leader: Replica | None, backlog: Sequence[Backlog], now: datetime
) -> str:
    """Leader, replicas and the outbox backlog: is the canary itself working?"""
    if leader is not None:
        lead = f"leader <b>{_e(leader.name)}</b> since {_ago(leader.since, now)}"
    else:
        lead = '<span class="tag sick">no leader</span> detection, alerts and verdicts are not running'
    names = ", ".join(f"{_e(r.name)} ({r.cells} cells)" for r in replicas) or "none connected"
    pending = sum(b.pending for b in backlog)
    given_up = sum(b.given_up for b in backlog)
    oldest = min((b.oldest for b in backlog if b.oldest is not None), default=None)
    if pending or given_up:
        state = "sick" if given_up else "warn"
        outbox = (
            _tag(state, f"{pending} undelivered")
            + (f" oldest {_ago(oldest, now)}" if oldest else "")
            + (f" · {given_up} given up in 24 h" if given_up else "")
        )
        rows = "".join(
            f"<li>{_e(b.receiver)}: {b.pending} pending, {b.given_up} given up"
            + (f" — last error: <code>{_e(b.last_error)}</code>" if b.last_error else "")
            + "</li>"
            for b in backlog
        )
        outbox += f'<ul class="backlog">{rows}</ul>'
    else:
        outbox = "0 undelivered notifications"
    return (
        f'<div class="service" id="service"><div>{lead}</div>'
        f'<div id="replicas">replicas ({len(replicas)}): {names}</div>'
        f'<div id="outbox">outbox: {outbox}</div></div>'
    )


def render_incidents(data: StatusData) -> str:
    rows = [
        [
            _tag("sick" if a.state == "firing" else "warn", a.state),
            f'<a href="#cell-{_e(a.cell)}">{_e(a.cell)}</a>',
            _e(a.metric),
            _ago(a.started_at, data.now),
            _e(a.evidence),
            f'<a href="{_e(a.link)}">evidence</a>',
        ]
        for a in data.alerts
    ]
    return _table("alerts", ["state", "cell", "metric", "since", "evidence", ""], rows, "No open alerts.")


SPARK_HEAD = (
    "<tr><th></th><td><small>failure rate per hour, last 24 h; grey: the baseline's range</small></td>"
    "<td><small>15 min</small></td><td><small>24 h before</small></td></tr>"
)


def render_card(cell: CellHealth, hourly: Hourly, samples: Sequence[dict[str, Any]]) -> str:
    """One unhealthy cell: why, its alerts, a sparkline per metric, its latest failing samples."""
    why = ""
    if cell.worst_metric:
        why = _e(cell.worst_metric)
        if cell.recent_rate is not None:
            why += f" {_rate(cell.recent_rate)} in 15 min (baseline {_rate(cell.baseline_rate)})"
        elif cell.alerts:
            why += f": alert {_e(cell.alerts[0].state)}"
    elif cell.status == "nodata":
        why = "no scores in the last 15 minutes"
    lines = []
    for m in cell.metrics:
        points = hourly.get(m.metric, [])
        severity = m.severity
        label = f"{m.metric}: failure rate per hour, 24 h, and its baseline band"
        svg = sparkline_svg(points, m.baseline_rate, m.recent_rate, label, recent_alarm=bool(severity))
        mark = {2: "sick", 1: "warn"}.get(severity or 0, "")
        lines.append(
            f'<tr class="{mark}-row"><th>{_e(m.metric)}</th><td>{svg}</td>'
            f"<td>{_rate(m.recent_rate)}</td><td>{_rate(m.baseline_rate)}</td></tr>"
        )
    alerts = "".join(
        f"<li>{_tag('sick' if a.state == 'firing' else 'warn', a.state)} {_e(a.metric)}: {_e(a.evidence)}"
        f' <a href="{_e(a.link)}">evidence</a></li>'
        for a in cell.alerts
    )
    sample_rows = "".join(
        f"<li><small>{_time(s['time'])}</small> {_e(s['metric'])} · {_e(s['probe_id'])}: "
        f"<mark>{_e(s['offending'])}</mark> {_e(s['explanation'])}<br><code>{_e(s['output'])}</code></li>"
        for s in samples
    )
    return (
        f'<section class="card {cell.status}-card" id="cell-{_e(cell.cell)}" data-cell="{_e(cell.cell)}"'
        f' data-status="{cell.status}">'
        f"<h3>{_tag(cell.status, STATUS_LABELS[cell.status])} {_e(cell.cell)}</h3>"
        f'<p class="why">{why}</p>'
        + (f'<ul class="alerts">{alerts}</ul>' if alerts else "")
        + (f'<table class="sparks">{SPARK_HEAD}{"".join(lines)}</table>' if lines else "")
        + (f"<details><summary>latest failing samples ({len(samples)})</summary>"
           f"<ul>{sample_rows}</ul></details>" if samples else "")
        + "</section>"
    )  # fmt: skip


def render_attention(data: StatusData) -> str:
    unhealthy = attention_order(data.cells)
    if not unhealthy:
        return '<p class="empty" id="attention">Every cell is healthy.</p>' if data.cells else ""
    detailed = unhealthy[:DETAILED_CELLS]
    cards = "".join(
        render_card(c, data.hourly.get(c.cell, {}), data.samples.get(c.cell, [])) for c in detailed
    )
    rest = unhealthy[DETAILED_CELLS:]
    more = ""
    if rest:
        names = ", ".join(f'<span class="{c.status}-text">{_e(c.cell)}</span>' for c in rest)
        more = f'<p class="more">and {len(rest)} more: {names}</p>'
    return f'<div id="attention">{cards}{more}</div>'


def _tile(c: CellHealth) -> str:
    return (
        f'<span class="tile {c.status}" data-cell="{_e(c.cell)}" data-status="{c.status}"'
        f' title="{_e(c.cell)}: {STATUS_LABELS[c.status]}">{_e(c.pool)}</span>'
    )


def render_groups(all_groups: Sequence[Group]) -> str:
    """Every cell, by model / platform: groups with a problem in full, healthy groups collapsed."""
    troubled = [g for g in all_groups if g.worst != "ok"]
    healthy = [g for g in all_groups if g.worst == "ok"]
    rows = "".join(
        f"<tr><th>{_e(g.model)} / {_e(g.platform)}</th><td>{''.join(_tile(c) for c in g.cells)}</td></tr>"
        for g in troubled
    )
    out = f'<table class="groups" id="groups">{rows}</table>' if rows else ""
    if healthy:
        # Names only: at 1,000 cells this list is most of the page, and nobody reads it at 3 a.m.
        cells = sum(len(g.cells) for g in healthy)
        lines = "".join(
            f"<li><b>{_e(g.model)} / {_e(g.platform)}</b>: {_e(' · '.join(c.pool for c in g.cells))}</li>"
            for g in healthy
        )
        out += (
            f'<details id="healthy"><summary>{_tag("ok", f"{cells} healthy")} in {len(healthy)} model /'
            f" platform groups with no problem</summary><ul>{lines}</ul></details>"
        )
    return out


def render_deploys(deploys: Sequence[dict[str, Any]], now: datetime) -> str:
    rows = [
        [
            f"{_e(d['name'])} <small>{_e(d['id'])}</small>",
            _tag(VERDICT_CLASS.get(d["verdict"], "nodata"), d["verdict"]),
            _ago(d["started_at"], now),
            _e(d["canary_cells"]),
            f"{d['failed_metrics']} / {d['metrics']}",
            _e(d["reason"]),
        ]
        for d in deploys
    ]
    headers = ["deploy", "verdict", "started", "canary cells", "failed metrics", "reason"]
    return _table("verdicts", headers, rows, "No deploy verdicts yet.")


EFFECT_UNITS = {
    "equivalence.forced": "{:.3g} nats/token",
    "equivalence.greedy": "{:+.2f} divergence rate",
    "equivalence.sampled": "{:+.2f} nearer its own samples",
}


def render_equivalence(rows: Sequence[EquivalenceRow], now: datetime) -> str:
    """One row per cell with an equivalence finding in 7 days: the test, open or resolved, the effect."""
    out = [
        [
            f'<a href="#cell-{_e(r.cell)}">{_e(r.cell)}</a>',
            _e(r.metric),
            _tag("sick", "different") if r.open else _tag("ok", f"resolved {_ago(r.resolved_at, now)}"),
            _e(EFFECT_UNITS.get(r.metric, "{:.3g}").format(r.effect)),
            f"{_e(r.statistic)} <small>p={r.p_value:.2g}, n={r.n}</small>",
            _ago(r.since, now),
            f'<a href="api/findings/{r.finding_id}">evidence</a>',
        ]
        for r in rows
    ]
    headers = ["cell", "test", "state", "effect", "statistic", "since", ""]
    return _table("equivalence", headers, out, "No equivalence findings in the last 7 days.")


CSS = """
body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:20px;color:#1d1d1d;background:#fff;font-size:14px}
h1{font-size:21px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px} h3{font-size:14px;margin:0 0 4px}
.meta{color:#555;font-size:13px} .empty{color:#555}
.service{background:#f5f5f5;padding:8px 12px;border-radius:4px;font-size:13px;line-height:1.6}
.backlog{margin:2px 0 0 18px;padding:0}
table{border-collapse:collapse}
.list{font-size:13px}
.list th,.list td{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}
.tag{padding:1px 6px;border-radius:3px;font-size:12px;font-weight:600;color:#fff}
.card{border-left:6px solid #9e9e9e;background:#fafafa;padding:8px 12px;margin:0 0 10px;border-radius:3px}
.sick-card{border-left-color:#c62828} .warn-card{border-left-color:#ef6c00}
.why{margin:0 0 4px;font-size:13px} .alerts{margin:0 0 4px 18px;padding:0;font-size:13px}
.sparks th{font-weight:400;text-align:left;padding:0 10px 0 0;font-size:13px;min-width:150px}
.sparks td{padding:0 10px 0 0;font-size:13px;white-space:nowrap}
.sparks tr.sick-row th{color:#c62828;font-weight:600}
.spark .band{fill:#dfe6ee} .spark .rate{fill:none;stroke:#37474f;stroke-width:1.4}
.spark .axis{stroke:#bbb;stroke-width:1} .spark .out{fill:#c62828} .spark .now{fill:#37474f}
details{margin:4px 0} summary{cursor:pointer;font-size:13px} code{white-space:pre-wrap;font-size:12px}
mark{background:#ffe0e0;color:#b00020;font-weight:600}
.groups th{text-align:left;font-weight:600;padding:3px 10px 3px 0;white-space:nowrap}
.tile{display:inline-block;min-width:90px;padding:10px 6px;margin:2px;border-radius:3px;color:#fff;
font-size:12px}
#healthy li{margin:2px 0;list-style:none;font-size:13px} #healthy b{font-weight:600}
.sick-text{color:#c62828} .warn-text{color:#ef6c00} .nodata-text{color:#616161}
"""


def render(data: StatusData, replica: str = "") -> str:
    """The whole page as HTML; every value from the database is escaped."""
    counts = status_counts(data.cells)
    summary = " ".join(_tag(s, f"{counts[s]} {STATUS_LABELS[s]}") for s in STATUS_COLOURS)
    colours = "".join(f".{s}{{background:{c}}}" for s, c in STATUS_COLOURS.items())
    served = f" · served by {_e(replica)}" if replica else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="60">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>canary status</title>
<style>{CSS}{colours}</style></head>
<body>
<h1>canary status</h1>
<p class="meta" id="summary">{summary} · {len(data.cells)} cells · {_time(data.now)}{served}
· status: the last 15 minutes against the 24 hours before; open alerts override</p>
{render_service(data.replicas, data.leader, data.backlog, data.now)}
<h2>Open incidents</h2>
{render_incidents(data)}
<h2>Needs attention</h2>
{render_attention(data) or '<p class="empty" id="attention">No cells yet.</p>'}
<h2>All cells by model / platform</h2>
{render_groups(groups(data.cells)) or '<p class="empty" id="groups">No cells yet.</p>'}
<h2>Latest deploys</h2>
{render_deploys(data.deploys, data.now)}
<h2>Equivalence across pools</h2>
{render_equivalence(data.equivalence, data.now)}
</body></html>
"""


def install_status_page(
    app: FastAPI,
    engine_getter: Callable[[], AsyncEngine],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    replica: Callable[[], str] = replica_name,
) -> None:
    """Serve the status page at ``GET /`` on ``app`` (``engine_getter`` is called per request)."""
    baselines = BaselineCache()

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def status_page() -> HTMLResponse:
        data = await load_status(engine_getter(), clock(), baselines)
        return HTMLResponse(render(data, replica()), headers={"Cache-Control": "no-store"})
