"""The dashboards' SQL as Grafana's PostgreSQL data source sends it (for tests and bench/dashboards.py).

Stdlib only. :func:`expand` replaces template variables, ``$__interval`` and the macros the
dashboards use; :func:`panel_queries` lists every query of every dashboard (panels, variables,
annotations) with a stable name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent / "grafana"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NICE_INTERVALS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def grafana_interval(seconds: int) -> str:
    """``$__interval`` as Grafana writes it: the largest unit that divides it (``5m``, ``1h``)."""
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


def interval_for(range_s: float, points: int = 1000, minimum: int = 60) -> int:
    """Grafana's ``$__interval`` for a range on a panel ``points`` pixels wide, rounded up to a nice step."""
    raw = max(range_s / points, minimum)
    return next((n for n in NICE_INTERVALS if n >= raw), NICE_INTERVALS[-1])


def _seconds(text: str) -> int:
    text = text.strip().strip("'\"")
    return int(text[:-1]) * UNITS[text[-1]]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(
    sql: str, start: datetime, end: datetime, interval_s: int = 60, variables: Mapping[str, str] | None = None
) -> str:
    """``sql`` as Grafana's PostgreSQL data source sends it to the server (times in UTC).

    Template variables first (``$name`` and ``${name}``, ``$__interval``), then the macros:
    ``$__timeFilter(c)`` -> ``c BETWEEN 'from' AND 'to'``; ``$__timeFrom()``/``$__timeTo()`` ->
    quoted RFC 3339 times; ``$__timeGroup(c, i)`` -> ``floor(extract(epoch from c)/s)*s`` and
    ``$__timeGroupAlias`` the same ``AS "time"``. Anything left starting with ``$`` raises.
    """
    values = {"__interval": grafana_interval(interval_s), **(variables or {})}
    for name in sorted(values, key=len, reverse=True):
        sql = sql.replace("${" + name + "}", values[name])
        sql = re.sub(rf"\${re.escape(name)}(?![A-Za-z0-9_])", lambda _m, v=values[name]: v, sql)

    def group(match: re.Match[str]) -> str:
        column, interval = (a.strip() for a in match.group(2).rsplit(",", 1))
        s = _seconds(interval)
        expr = f"floor(extract(epoch from {column})/{s})*{s}"
        return expr + (' AS "time"' if match.group(1) == "Alias" else "")

    sql = re.sub(r"\$__timeGroup(Alias)?\(([^()]*)\)", group, sql)
    sql = re.sub(
        r"\$__timeFilter\(([^()]*)\)",
        lambda m: f"{m.group(1).strip()} BETWEEN '{_iso(start)}' AND '{_iso(end)}'",
        sql,
    )
    sql = sql.replace("$__timeFrom()", f"'{_iso(start)}'").replace("$__timeTo()", f"'{_iso(end)}'")
    leftover = re.findall(r"\$[A-Za-z_{][A-Za-z0-9_]*", sql)
    if leftover:
        raise ValueError(f"unexpanded Grafana variables or macros: {leftover}")
    return sql


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def panel_queries(dashboards: Mapping[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(name, SQL with macros, the panel/variable/annotation it belongs to) for every query."""
    for board, d in dashboards.items():
        for panel in d["panels"]:
            for target in panel["targets"]:
                yield f"{board}/{panel['title']}", target["rawSql"], panel
        for variable in d["templating"]["list"]:
            yield f"{board}/${variable['name']}", variable["query"], variable
        for annotation in d["annotations"]["list"]:
            if "target" in annotation:
                yield f"{board}/annotation:{annotation['name']}", annotation["target"]["rawSql"], annotation
