"""``canary dashboards push --dry-run`` lists what it would save and contacts no Grafana."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from canary.cli import main
from canary.cli.dashboards import DASHBOARD_DIR


def test_a_dry_run_lists_every_dashboard_without_url_or_token() -> None:
    result = CliRunner().invoke(main, ["dashboards", "push", "--dry-run", "--datasource-uid", "pg-7"])
    assert result.exit_code == 0, result.output
    titles = [
        json.loads(p.read_text(encoding="utf-8"))["title"] for p in sorted(DASHBOARD_DIR.glob("*.json"))
    ]
    assert titles and all(title in result.output for title in titles)
    assert result.output.count("data source pg-7") == len(titles)
    assert f"{len(titles)} dashboard(s)" in result.output and "nothing sent" in result.output


def test_a_dry_run_reads_the_directory_given_with_from(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(json.dumps({"title": "only one", "uid": "u1", "panels": []}))
    result = CliRunner().invoke(main, ["dashboards", "push", "--dry-run", "--from", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "only one: uid u1, 0 panels" in result.output and "1 dashboard(s)" in result.output


def test_a_push_without_url_or_token_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["dashboards", "push"])
    assert result.exit_code == 2
    assert "--url and --token are required" in result.output
