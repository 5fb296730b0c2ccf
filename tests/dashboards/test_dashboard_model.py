"""The dashboard JSON follows Grafana's dashboard model and is what dashboards/build.py builds.

Grafana's own schema is checked in test_dashboard_schema.py; this file checks what the product
needs beyond it (https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/
view-dashboard-json-model/): required keys and their types, panels on the 24-column grid
without overlaps, PostgreSQL targets in code mode, query variables and annotation queries.
"""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from dashkit import DASHBOARD_DIR, ROOT, load_dashboards

PANEL_TYPES = {"table", "stat", "timeseries", "bargauge", "piechart", "text", "state-timeline", "row"}
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "canary-postgres"}

# key -> type, for the top level of a dashboard and for each panel
DASHBOARD_KEYS: dict[str, type | tuple[type, ...]] = {
    "uid": str,
    "title": str,
    "tags": list,
    "timezone": str,
    "editable": bool,
    "schemaVersion": int,
    "version": int,
    "refresh": str,
    "time": dict,
    "templating": dict,
    "annotations": dict,
    "panels": list,
    "links": list,
}
PANEL_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "type": str,
    "title": str,
    "gridPos": dict,
    "datasource": dict,
    "targets": list,
    "fieldConfig": dict,
    "options": dict,
}


def check_types(obj: dict[str, Any], keys: dict[str, type | tuple[type, ...]], where: str) -> None:
    for key, kind in keys.items():
        assert key in obj, f"{where}: missing {key!r}"
        assert isinstance(obj[key], kind), f"{where}: {key!r} is {type(obj[key]).__name__}"


def validate_dashboard(d: dict[str, Any]) -> None:
    """Raise AssertionError where ``d`` departs from Grafana's dashboard JSON model."""
    check_types(d, DASHBOARD_KEYS, d.get("uid", "?"))
    assert 36 <= d["schemaVersion"] <= 41
    assert set(d["time"]) == {"from", "to"}
    assert len(d["uid"]) <= 40 and d["uid"].replace("-", "").isalnum()
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        where = f"{d['uid']}: {p.get('title')}"
        check_types(p, PANEL_KEYS, where)
        assert p["type"] in PANEL_TYPES, where
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in g.values()), where
        assert 0 <= g["x"] and 1 <= g["w"] and g["x"] + g["w"] <= 24 and g["h"] >= 1, where
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{where} overlaps another panel"
        cells |= area
        assert p["datasource"] == DATASOURCE, where
        assert set(p["fieldConfig"]) == {"defaults", "overrides"}, where
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), where
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["rawQuery"] is True and t["editorMode"] == "code", (
                where
            )
            assert t["format"] in {"table", "time_series"} and t["rawSql"].strip(), where
            assert "FROM v_" in t["rawSql"], f"{where}: dashboards read the views, not tables"
        if p["type"] == "timeseries":
            assert all(t["format"] == "time_series" for t in p["targets"]), where
        if "repeat" in p:
            names = {v["name"] for v in d["templating"]["list"]}
            assert p["repeat"] in names and p["repeatDirection"] in {"h", "v"}, where
        for override in p["fieldConfig"]["overrides"]:
            assert {"matcher", "properties"} == set(override), where
            assert all({"id", "value"} == set(prop) for prop in override["properties"]), where
    for v in d["templating"]["list"]:
        check_types(
            v, {"type": str, "name": str, "query": str, "datasource": dict}, f"{d['uid']}: ${v.get('name')}"
        )
        assert v["type"] == "query" and "FROM v_" in v["query"]
    for a in d["annotations"]["list"]:
        check_types(a, {"name": str, "enable": bool, "iconColor": str, "datasource": dict}, d["uid"])
        if "target" in a:
            assert a["datasource"] == DATASOURCE and a["target"]["rawSql"].strip()


@pytest.mark.parametrize("name", ["overview", "cell", "deploys"])
def test_each_dashboard_follows_grafanas_dashboard_model(name: str) -> None:
    validate_dashboard(load_dashboards()[name])


def test_the_validator_rejects_overlapping_panels_and_table_reads() -> None:
    broken = load_dashboards()["overview"]
    broken["panels"][1]["gridPos"] = dict(broken["panels"][0]["gridPos"])
    with pytest.raises(AssertionError, match="overlaps"):
        validate_dashboard(broken)
    broken = load_dashboards()["overview"]
    broken["panels"][0]["targets"][0]["rawSql"] = "SELECT * FROM runs"
    with pytest.raises(AssertionError, match="views"):
        validate_dashboard(broken)


def test_the_json_on_disk_is_what_build_py_builds() -> None:
    build = runpy.run_path(str(ROOT / "dashboards" / "build.py"))["build"]
    built = build()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARD_DIR.glob("*.json")}
    assert built == on_disk, "run: python dashboards/build.py"


def test_dashboard_uids_are_distinct_and_linked() -> None:
    dashboards = load_dashboards()
    uids = {d["uid"] for d in dashboards.values()}
    assert uids == {"canary-overview", "canary-cell", "canary-deploys"}
    for d in dashboards.values():
        assert {link["url"] for link in d["links"]} == {f"/d/{uid}" for uid in uids}
