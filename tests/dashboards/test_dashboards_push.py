"""``canary dashboards push|annotate`` against a loopback server speaking the few Grafana HTTP API
endpoints they use (grafana-client uses niquests, which respx cannot intercept)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from click.testing import CliRunner
from dashkit import seed

from canary.cli import main
from canary.storage.engine import async_engine

TOKEN = "glsa_test_token"


class FakeGrafana:
    """Folders, dashboards and annotations in memory; every request must carry the bearer token."""

    def __init__(self) -> None:
        self.folders: dict[str, str] = {}  # uid -> title
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> saved body
        self.annotations: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.unauthorised = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self, method: str) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    fake.unauthorised += 1
                    return self.reply(401, {"message": "Unauthorized"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = fake.route(method, parts.path, parse_qs(parts.query), body)
                self.reply(status, answer)

            def do_GET(self) -> None:
                self.handle_any("GET")

            def do_POST(self) -> None:
                self.handle_any("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/api/search"):
            hits = [{"uid": u, "title": t, "type": "dash-folder"} for u, t in self.folders.items()]
            if query.get("type") == ["dash-folder"]:
                return 200, [h for h in hits if query.get("query", [""])[0].lower() in h["title"].lower()]
            return 200, []
        if (method, path) == ("POST", "/api/folders"):
            uid = f"f{len(self.folders) + 1}"
            self.folders[uid] = body["title"]
            return 200, {"uid": uid, "title": body["title"], "id": len(self.folders)}
        if (method, path) == ("POST", "/api/dashboards/db"):
            dashboard = body["dashboard"]
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            if dashboard["uid"] in self.dashboards and not body.get("overwrite"):
                return 412, {"message": "version-mismatch"}
            self.dashboards[dashboard["uid"]] = body
            return 200, {"uid": dashboard["uid"], "status": "success", "url": f"/d/{dashboard['uid']}/x"}
        if (method, path) == ("GET", "/api/annotations"):
            tags = set(query.get("tags", []))
            return 200, [a for a in self.annotations if tags <= set(a["tags"])]
        if (method, path) == ("POST", "/api/annotations"):
            self.annotations.append(body)
            return 200, {"id": len(self.annotations), "message": "Annotation added"}
        return 404, {"message": "not found"}

    def __enter__(self) -> FakeGrafana:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGrafana]:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    with FakeGrafana() as fake:
        yield fake


def test_push_saves_every_dashboard_into_a_new_folder_with_the_token(grafana: FakeGrafana) -> None:
    args = ["dashboards", "push", "--url", grafana.url, "--token", "env:GRAFANA_TOKEN"]
    result = CliRunner().invoke(main, [*args, "--datasource-uid", "pg-prod"])
    assert result.exit_code == 0, result.output
    assert grafana.folders == {"f1": "canary"}
    assert set(grafana.dashboards) == {"canary-overview", "canary-cell", "canary-deploys"}
    for saved in grafana.dashboards.values():
        assert saved["folderUid"] == "f1" and saved["overwrite"] is True
        text = json.dumps(saved["dashboard"])
        assert '"uid": "canary-postgres"' not in text and '"uid": "pg-prod"' in text
    assert f"{grafana.url}/d/canary-overview/x" in result.output
    assert grafana.unauthorised == 0

    again = CliRunner().invoke(main, args)  # a second push reuses the folder and overwrites
    assert again.exit_code == 0, again.output
    assert len(grafana.folders) == 1


def test_push_with_a_wrong_token_exits_1_and_names_grafanas_answer(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG", "nope")
    result = CliRunner().invoke(main, ["dashboards", "push", "--url", grafana.url, "--token", "env:WRONG"])
    assert result.exit_code == 1
    assert "grafana refused: 401" in result.output and grafana.dashboards == {}


def test_a_literal_or_unset_token_is_a_usage_error(grafana: FakeGrafana) -> None:
    literal = CliRunner().invoke(main, ["dashboards", "push", "--url", grafana.url, "--token", TOKEN])
    assert literal.exit_code == 2 and "env:NAME" in literal.output
    unset = CliRunner().invoke(main, ["dashboards", "push", "--url", grafana.url, "--token", "env:UNSET_X"])
    assert unset.exit_code == 2 and "UNSET_X" in unset.output
    assert grafana.requests == []


def test_annotate_posts_each_deploy_once(grafana: FakeGrafana, db_url: str, tmp_path: Path) -> None:
    async def seed_db() -> None:
        engine = async_engine(db_url)
        try:
            await seed(engine, datetime.now(UTC).replace(microsecond=0))
        finally:
            await engine.dispose()

    anyio.run(seed_db)
    config = tmp_path / "canary.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n', encoding="utf-8")
    args = [
        "dashboards",
        "annotate",
        "--url",
        grafana.url,
        "--token",
        "env:GRAFANA_TOKEN",
        "--config",
        str(config),
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "4 deploy annotation(s) posted" in first.output
    fail = next(a for a in grafana.annotations if "deploy:d-rollout-42" in a["tags"])
    assert fail["text"].startswith("rollout-42: FAIL") and "verdict:FAIL" in fail["tags"]
    assert fail["timeEnd"] - fail["time"] == 1800 * 1000
    second = CliRunner().invoke(main, args)
    assert "0 deploy annotation(s) posted, 4 already there" in second.output
    assert len(grafana.annotations) == 4
