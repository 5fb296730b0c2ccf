"""Build the Grafana dashboards (``dashboards/grafana/*.json``) from the panel definitions here.

Run ``python dashboards/build.py`` after changing a panel; a test fails when the JSON on disk is
not what this file builds. Every query reads the ``v_*`` views of migration 0003 (never a
table), so a table refactor changes a view, not a dashboard. Time series over ranges up to two
days read per-minute rollups, longer ranges per-hour rollups: both branches are in the query and
PostgreSQL runs only the one whose constant range condition holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "grafana"
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "canary-postgres"}
SCHEMA_VERSION = 39
STATUS_COLOURS = {"ok": "green", "warn": "orange", "sick": "red", "nodata": "#8e8e8e"}
VERDICT_COLOURS = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "orange", "PENDING": "blue"}
SHORT_RANGE = "$__timeTo()::timestamptz - $__timeFrom()::timestamptz <= interval '2 days'"
LONG_RANGE = "$__timeTo()::timestamptz - $__timeFrom()::timestamptz > interval '2 days'"

Json = dict[str, Any]


def rollup(kind: str, columns: str, where: str) -> str:
    """Rows of the minute or hour rollup view of ``kind`` (score|run), whichever fits the range."""
    return (
        f"SELECT time, {columns} FROM v_{kind}_minute\n"
        f"  WHERE {where} AND $__timeFilter(time) AND {SHORT_RANGE}\n"
        f"  UNION ALL\n"
        f"  SELECT time, {columns} FROM v_{kind}_hour\n"
        f"  WHERE {where} AND $__timeFilter(time) AND {LONG_RANGE}"
    )


def value_mappings(colours: dict[str, str]) -> list[Json]:
    options = {text: {"color": colour, "index": i} for i, (text, colour) in enumerate(colours.items())}
    return [{"type": "value", "options": options}]


def field_override(column: str, *properties: tuple[str, Any]) -> Json:
    """A field override for one table column or series: (property id, value) pairs."""
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [{"id": prop, "value": value} for prop, value in properties],
    }


def coloured_column(column: str, colours: dict[str, str]) -> Json:
    """A table column whose cells take the background colour of their value (status, verdict)."""
    return field_override(
        column,
        ("mappings", value_mappings(colours)),
        ("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
    )


def target(sql: str, fmt: str = "table", ref: str = "A") -> Json:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql.strip(),
    }


def panel(
    kind: str, title: str, grid: tuple[int, int, int, int], sql: str, fmt: str = "table", **extra: Any
) -> Json:
    x, y, w, h = grid
    body: Json = {
        "type": kind,
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "datasource": DATASOURCE,
        "targets": [target(sql, fmt)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    for key, value in extra.items():
        if key in ("defaults", "overrides"):
            body["fieldConfig"][key] = value
        else:
            body[key] = value
    return body


def coloured_text(colours: dict[str, str]) -> Json:
    return {
        "mappings": value_mappings(colours),
        "custom": {"cellOptions": {"type": "color-background", "mode": "basic"}, "align": "center"},
    }


def query_variable(name: str, label: str, sql: str, *, multi: bool = False) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": sql,
        "refresh": 2,  # on time range change: new cells and deploys appear
        "multi": multi,
        "includeAll": multi,
        "options": [],
        "sort": 1,
        "hide": 0,
    }


DEPLOY_ANNOTATION: Json = {
    "name": "Deploys",
    "enable": True,
    "iconColor": "purple",
    "datasource": DATASOURCE,
    "target": target(
        "SELECT started_at AS time, ends_at AS timeend, name || ': ' || verdict AS text, verdict AS tags"
        " FROM v_deploy_verdicts WHERE $__timeFilter(started_at) ORDER BY started_at"
    ),
}
BUILTIN_ANNOTATION: Json = {
    "name": "Annotations & Alerts",
    "builtIn": 1,
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "type": "dashboard",
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
}


def dashboard_link(title: str, url: str) -> Json:
    """A link in the dashboard's header that keeps the time range (every key Grafana's schema requires)."""
    return {"title": title, "type": "link", "url": url, "icon": "dashboard", "tooltip": "", "tags": [],
            "asDropdown": False, "includeVars": False, "keepTime": True, "targetBlank": False}  # fmt: skip


def dashboard(uid: str, title: str, panels: list[Json], variables: list[Json], time_from: str) -> Json:
    for index, p in enumerate(panels, start=1):
        p["id"] = index
    return {
        "uid": uid,
        "title": title,
        "description": "canary: fixed probes against every (model, platform, pool) cell.",
        "tags": ["canary"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "templating": {"list": variables},
        "annotations": {"list": [BUILTIN_ANNOTATION, DEPLOY_ANNOTATION]},
        "links": [
            dashboard_link("Overview", "/d/canary-overview"),
            dashboard_link("Cell", "/d/canary-cell"),
            dashboard_link("Deploys", "/d/canary-deploys"),
        ],
        "panels": panels,
    }


CELL_LINK = [{"title": "Open cell", "url": "/d/canary-cell?var-cell=${__value.raw}&${__url_time_range}"}]
DEPLOY_RESULTS_LINK = {"title": "Per-metric results", "url": "/d/canary-deploys?var-deploy=${__value.raw}"}


def overview() -> Json:
    matrix = panel(
        "table",
        "Cell health (model / platform × pool)",
        (0, 0, 16, 11),
        """
SELECT model || ' / ' || platform AS "model / platform", pool, status
FROM v_cell_health ORDER BY 1, 2
""",
        description="Last 15 minutes of every metric against the cell's previous 24 hours; open alerts "
        "override (firing = sick). Grey: no scores in 15 minutes.",
        transformations=[
            {
                "id": "groupingToMatrix",
                "options": {"columnField": "pool", "rowField": "model / platform", "valueField": "status"},
            }
        ],
        defaults=coloured_text(STATUS_COLOURS),
        options={"showHeader": True, "cellHeight": "md"},
    )
    counts = panel(
        "stat",
        "Cells",
        (16, 0, 8, 5),
        """
SELECT count(*) FILTER (WHERE status = 'sick') AS sick, count(*) FILTER (WHERE status = 'warn') AS warn,
       count(*) FILTER (WHERE status = 'nodata') AS "no data", count(*) AS cells
FROM v_cell_health
""",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
        },
        defaults={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}},
    )
    attention = panel(
        "table",
        "Cells needing attention",
        (16, 5, 8, 6),
        """
SELECT cell, status, worst_metric AS metric, recent_failures AS failures, recent_runs AS runs,
       round(recent_rate::numeric, 3) AS rate, round(baseline_rate::numeric, 3) AS baseline, open_alerts
FROM v_cell_health WHERE status <> 'ok' ORDER BY severity DESC, recent_rate DESC NULLS LAST, cell
""",
        overrides=[
            coloured_column("status", STATUS_COLOURS),
            field_override("cell", ("links", CELL_LINK)),
        ],
    )
    alerts = panel(
        "table",
        "Open alerts",
        (0, 11, 14, 8),
        """
SELECT started_at AS since, state, cell, metric, summary, sample_output
FROM v_open_alerts ORDER BY state = 'firing' DESC, started_at
""",
        overrides=[
            field_override("cell", ("links", CELL_LINK)),
        ],
    )
    deploys = panel(
        "table",
        "Recent deploys",
        (14, 11, 10, 8),
        """
SELECT started_at, name, verdict, status, reason
FROM v_deploy_verdicts WHERE $__timeFilter(started_at) ORDER BY started_at DESC LIMIT 20
""",
        overrides=[
            coloured_column("verdict", VERDICT_COLOURS),
        ],
    )
    return dashboard(
        "canary-overview", "canary: overview", [matrix, counts, attention, alerts, deploys], [], "now-6h"
    )


def cell() -> Json:
    cell_var = query_variable("cell", "Cell", "SELECT cell FROM v_cell_health ORDER BY cell")
    metric_var = query_variable(
        "metric",
        "Metric",
        "SELECT DISTINCT metric FROM v_score_hour WHERE cell = '$cell' AND time > now() - interval '7 days'",
        multi=True,
    )
    rate = panel(
        "timeseries",
        "$metric failure rate",
        (0, 0, 8, 8),
        f"""
WITH series AS (
  {rollup("score", "runs, failures", "cell = '$cell' AND metric = '$metric'")}
), baseline AS (
  SELECT coalesce(sum(failures)::float8 / nullif(sum(runs), 0), 0) AS p FROM v_score_hour
  WHERE cell = '$cell' AND metric = '$metric'
    AND time >= $__timeFrom()::timestamptz - interval '7 days' AND time < $__timeFrom()::timestamptz
), buckets AS (
  SELECT $__timeGroupAlias(time, $__interval), sum(runs) AS runs, sum(failures) AS failures
  FROM series GROUP BY 1
)
SELECT b.time, b.failures::float8 / b.runs AS "failure rate",
       greatest(0, bl.p - 3 * sqrt(bl.p * (1 - bl.p) / b.runs)) AS "baseline low",
       least(1, bl.p + 3 * sqrt(greatest(bl.p, 0.005) * (1 - bl.p) / b.runs)) AS "baseline high"
FROM buckets b CROSS JOIN baseline bl WHERE b.runs > 0 ORDER BY 1
""",
        "time_series",
        description="Failure rate per bucket; the band is the cell's own rate over the 7 days before "
        "the range, ± 3 binomial standard deviations for the bucket's runs.",
        repeat="metric",
        repeatDirection="h",
        maxPerRow=3,
        interval="1m",
        defaults={"unit": "percentunit", "min": 0, "custom": {"fillOpacity": 0, "lineWidth": 2}},
        overrides=[
            field_override(
                "baseline high",
                ("custom.fillBelowTo", "baseline low"),
                ("custom.fillOpacity", 20),
                ("custom.lineWidth", 0),
                ("color", {"mode": "fixed", "fixedColor": "green"}),
            ),
            field_override(
                "baseline low",
                ("custom.lineWidth", 0),
                ("color", {"mode": "fixed", "fixedColor": "green"}),
            ),
            field_override("failure rate", ("color", {"mode": "fixed", "fixedColor": "red"})),
        ],
    )
    latency = panel(
        "timeseries",
        "Latency",
        (0, 8, 12, 8),
        f"""
WITH series AS (
  {rollup("run", "runs, latency_p50_ms, latency_p95_ms", "cell = '$cell'")}
)
SELECT $__timeGroupAlias(time, $__interval),
       sum(latency_p50_ms * runs) / nullif(sum(runs) FILTER (WHERE latency_p50_ms IS NOT NULL), 0)
           AS "p50 (mean of buckets)",
       max(latency_p95_ms) AS "p95 (worst bucket)"
FROM series GROUP BY 1 ORDER BY 1
""",
        "time_series",
        interval="1m",
        defaults={"unit": "ms", "min": 0},
    )
    pools = panel(
        "timeseries",
        "Served-by pool mix",
        (12, 8, 12, 8),
        f"""
WITH series AS (
  {rollup("run", "pools", "cell = '$cell'")}
)
SELECT $__timeGroupAlias(time, $__interval), kv.key AS metric, sum(kv.value::int) AS runs
FROM series CROSS JOIN LATERAL jsonb_each_text(series.pools) kv
GROUP BY 1, 2 ORDER BY 1
""",
        "time_series",
        description="Which pool answered, from the served-by headers: a short-context cell served by "
        "long-context is the routing fault.",
        interval="1m",
        defaults={
            "custom": {"stacking": {"mode": "percent", "group": "A"}, "fillOpacity": 60, "drawStyle": "bars"}
        },
    )
    errors = panel(
        "timeseries",
        "Request errors",
        (0, 16, 8, 8),
        f"""
WITH series AS (
  {rollup("run", "runs, errors", "cell = '$cell'")}
)
SELECT $__timeGroupAlias(time, $__interval), sum(errors)::float8 / nullif(sum(runs), 0) AS "error rate"
FROM series GROUP BY 1 ORDER BY 1
""",
        "time_series",
        interval="1m",
        defaults={"unit": "percentunit", "min": 0},
    )
    samples = panel(
        "table",
        "Failing samples",
        (8, 16, 16, 12),
        """
SELECT time, metric, probe_id AS probe, offending, explanation, context, served_pool, output
FROM v_failed_samples WHERE cell = '$cell' AND $__timeFilter(time)
ORDER BY time DESC LIMIT 50
""",
        description="The latest failed scores: the offending characters (unexpected script), the syntax "
        "error and its line (code), expected vs answered, the pool that served a misrouted request.",
        overrides=[
            field_override(
                "offending",
                ("custom.cellOptions", {"type": "color-text"}),
                ("color", {"mode": "fixed", "fixedColor": "red"}),
            ),
        ],
    )
    open_alerts = panel(
        "table",
        "Open alerts on this cell",
        (0, 24, 8, 4),
        "SELECT started_at AS since, state, metric, summary FROM v_open_alerts WHERE cell = '$cell'"
        " ORDER BY started_at",
    )
    # Equivalence findings (scheduled equivalence probes against the same model's other cells):
    # the statistic's effect against its tolerance, open and resolved, newest first.
    equivalence = panel(
        "table",
        "Equivalence against peers (equivalence.forced, equivalence.greedy)",
        (0, 28, 24, 6),
        """
SELECT time, metric, effect, ci_low, ci_high, tolerance, n, p_value, open, message
FROM v_equivalence WHERE cell = '$cell' AND $__timeFilter(time)
ORDER BY time DESC LIMIT 50""",
    )
    return dashboard(
        "canary-cell",
        "canary: cell",
        [rate, latency, pools, errors, samples, open_alerts, equivalence],
        [cell_var, metric_var],
        "now-24h",
    )


def deploys() -> Json:
    deploy_var = query_variable(
        "deploy",
        "Deploy",
        "SELECT id AS __value, name || ' (' || id || ')' AS __text FROM v_deploy_verdicts"
        " WHERE NOT annotation_only ORDER BY started_at DESC LIMIT 200",
    )
    verdict_counts = panel(
        "bargauge",
        "Verdicts in range",
        (0, 0, 8, 7),
        """
SELECT verdict, count(*) AS deploys FROM v_deploy_verdicts
WHERE $__timeFilter(started_at) AND NOT annotation_only GROUP BY verdict ORDER BY verdict
""",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
            "orientation": "horizontal",
        },
        defaults={"mappings": value_mappings(VERDICT_COLOURS)},
    )
    history = panel(
        "table",
        "Verdict history",
        (8, 0, 16, 14),
        """
SELECT started_at, ends_at, name, id, verdict, status, failed_metrics, metrics, reason,
       canary_cells, baseline_cells
FROM v_deploy_verdicts WHERE $__timeFilter(started_at) AND NOT annotation_only
ORDER BY started_at DESC
""",
        overrides=[
            coloured_column("verdict", VERDICT_COLOURS),
            field_override("id", ("links", [DEPLOY_RESULTS_LINK])),
        ],
    )
    per_metric = panel(
        "table",
        "Per-metric results: $deploy",
        (0, 14, 24, 10),
        """
SELECT metric, outcome, canary_rate, baseline_rate, effect, ci_low, ci_high, p_value,
       canary_n, baseline_n, method, critical, reason
FROM v_deploy_metric_results WHERE deploy_id = '$deploy'
ORDER BY outcome = 'FAIL' DESC, metric
""",
        overrides=[
            coloured_column("outcome", VERDICT_COLOURS),
        ],
    )
    failing_metrics = panel(
        "table",
        "Metrics that failed deploys",
        (0, 7, 8, 7),
        """
SELECT metric, count(*) FILTER (WHERE outcome = 'FAIL') AS failed, count(*) AS judged
FROM v_deploy_metric_results WHERE $__timeFilter(started_at)
GROUP BY metric ORDER BY failed DESC, metric
""",
    )
    return dashboard(
        "canary-deploys",
        "canary: deploys",
        [verdict_counts, failing_metrics, history, per_metric],
        [deploy_var],
        "now-7d",
    )


DASHBOARDS = {"overview": overview, "cell": cell, "deploys": deploys}


def build() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    return {
        f"{name}.json": json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
        for name, make in DASHBOARDS.items()
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
