"""``canary dashboards push|annotate``: install the dashboards into an existing Grafana.

``push`` creates (or finds) a folder and saves the three dashboards of ``dashboards/grafana/``
into it with ``overwrite``, pointing their queries at the PostgreSQL data source you name
(``--datasource-uid``; the canary database must already be a data source of that Grafana);
``push --dry-run`` loads them the same way and lists them without contacting any Grafana.
``annotate`` posts the deploys of the last ``--since`` hours as Grafana annotations tagged
``canary-deploy``, so other dashboards can overlay them; deploys already annotated (found by
their ``deploy:<id>`` tag) are skipped, so it can run from cron.

Both talk to Grafana with grafana-client (the ``dashboards`` extra) and a service-account token
given as ``env:NAME``. Exit 0 on success, 1 when Grafana refuses, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from canary.cli.common import config_option, data_dir_option, load_or_exit
from canary.resources import shipped

DASHBOARD_DIR = shipped("dashboards") / "grafana"
DEFAULT_DATASOURCE_UID = "canary-postgres"
ANNOTATION_TAG = "canary-deploy"

url_option = click.option("--url", required=True, help="Grafana base URL, e.g. https://grafana.example.com")
token_option = click.option(
    "--token", required=True, help="Grafana service-account token as env:NAME (never on the command line)."
)


def resolve_token(token: str) -> str:
    """``env:NAME`` -> the variable's value; a literal token is refused so it never lands in shell history."""
    from canary.config.secrets import resolve_secret, reveal
    from canary.errors import ConfigError

    if not token.startswith("env:"):
        raise click.BadParameter("give the token as env:NAME", param_hint="--token")
    try:
        return reveal(resolve_secret(token, "<command line>", "--token")) or ""
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--token") from None


def grafana(url: str, token: str) -> Any:
    try:
        from grafana_client.api import GrafanaApi
    except ImportError:  # pragma: no cover - depends on the installation
        click.echo("grafana-client is missing: pip install 'llm-quality-canary[dashboards]'", err=True)
        sys.exit(2)
    return GrafanaApi.from_url(url, credential=resolve_token(token), timeout=30.0)


def load_dashboards(directory: Path, datasource_uid: str) -> Iterator[dict[str, Any]]:
    """The dashboard JSON files, with every PostgreSQL data source reference set to ``datasource_uid``."""

    def retarget(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "grafana-postgresql-datasource" and "uid" in node:
                return {**node, "uid": datasource_uid}
            return {k: retarget(v) for k, v in node.items()}
        if isinstance(node, list):
            return [retarget(v) for v in node]
        return node

    for path in sorted(directory.glob("*.json")):
        dashboard = retarget(json.loads(path.read_text(encoding="utf-8")))
        dashboard["id"] = None  # Grafana matches on uid; a stale numeric id would be refused
        yield dashboard


def ensure_folder(api: Any, title: str) -> str:
    """The uid of the folder titled ``title``, created when missing."""
    for hit in api.search.search_dashboards(query=title, type_="dash-folder"):
        if hit.get("title") == title:
            return str(hit["uid"])
    return str(api.folder.create_folder(title)["uid"])


@click.group("dashboards")
def dashboards_group() -> None:
    """Grafana dashboards: install them, and annotate deploys."""


@dashboards_group.command("push")
@click.option("--url", help="Grafana base URL, e.g. https://grafana.example.com (not needed with --dry-run).")
@click.option(
    "--token",
    help="Grafana service-account token as env:NAME (never on the command line; not needed with --dry-run).",
)
@click.option("--folder", default="canary", show_default=True, help="Grafana folder to save into.")
@click.option(
    "--datasource-uid",
    default=DEFAULT_DATASOURCE_UID,
    show_default=True,
    help="uid of the Grafana PostgreSQL data source that reads the canary database.",
)
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=DASHBOARD_DIR,
    help="Directory of dashboard JSON files.",
)
@click.option(
    "--dry-run", is_flag=True, help="Load the dashboards and list what would be saved; contact no Grafana."
)
def push_command(
    url: str | None, token: str | None, folder: str, datasource_uid: str, source: Path, dry_run: bool
) -> None:
    """Save the canary dashboards into a Grafana (overwriting earlier versions)."""
    dashboards = list(load_dashboards(source, datasource_uid))
    if dry_run:
        for dashboard in dashboards:
            panels = len(dashboard.get("panels", []))
            click.echo(
                f"{dashboard['title']}: uid {dashboard.get('uid')}, {panels} panels,"
                f" folder '{folder}', data source {datasource_uid}"
            )
        click.echo(f"{len(dashboards)} dashboard(s) from {source} (dry run: nothing sent)")
        return
    if not url or not token:
        raise click.UsageError("--url and --token are required (or give --dry-run)")
    from grafana_client.client import GrafanaException

    api = grafana(url, token)
    try:
        folder_uid = ensure_folder(api, folder)
        for dashboard in dashboards:
            saved = api.dashboard.update_dashboard(
                {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": True, "message": "canary push"}
            )
            click.echo(f"{dashboard['title']}: {url.rstrip('/')}{saved.get('url', '')}")
    except GrafanaException as exc:
        click.echo(f"grafana refused: {exc.status_code} {exc.message}", err=True)
        sys.exit(1)


async def read_deploys(url: str, since: datetime) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from canary.storage.engine import async_engine

    engine = async_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT id, name, verdict, status, reason, started_at, ends_at, canary_cells"
                    " FROM v_deploy_verdicts WHERE started_at >= :since ORDER BY started_at"
                ),
                {"since": since},
            )
            return [dict(r) for r in rows.mappings().all()]
    finally:
        await engine.dispose()


def annotation_for(deploy: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of grafana-client's ``add_annotation`` for one deploy."""
    text = f"{deploy['name']}: {deploy['verdict']}"
    if deploy["reason"]:
        text += f" ({deploy['reason']})"
    if deploy["canary_cells"]:
        text += f"; canary cells: {deploy['canary_cells']}"
    start_ms = int(deploy["started_at"].timestamp() * 1000)
    end_ms = int(deploy["ends_at"].timestamp() * 1000)
    return {
        "time_from": start_ms,
        "time_to": max(end_ms, start_ms),
        "tags": [ANNOTATION_TAG, f"deploy:{deploy['id']}", f"verdict:{deploy['verdict']}"],
        "text": text,
    }


@dashboards_group.command("annotate")
@url_option
@token_option
@click.option(
    "--since", "since_h", type=float, default=168.0, show_default=True, help="Hours of deploys to post."
)
@config_option
@data_dir_option
def annotate_command(url: str, token: str, since_h: float, config_path: Path, data_dir: Path | None) -> None:
    """Post recent deploys (with their verdicts) to Grafana as annotations tagged canary-deploy."""
    import anyio
    from grafana_client.client import GrafanaException

    from canary.storage.engine import database

    config = load_or_exit(config_path)
    api = grafana(url, token)
    since = datetime.now(UTC) - timedelta(hours=since_h)
    with database(config.database_url, data_dir or config.data_dir) as db_url:
        deploys = anyio.run(read_deploys, db_url, since)
    try:
        existing = api.annotations.find_annotations(
            time_from=int(since.timestamp() * 1000), tags=[ANNOTATION_TAG], limit=10000
        )
        done = {tag for a in existing for tag in a.get("tags", []) if tag.startswith("deploy:")}
        posted = 0
        for deploy in deploys:
            if f"deploy:{deploy['id']}" in done:
                continue
            api.annotations.add_annotation(**annotation_for(deploy))
            posted += 1
    except GrafanaException as exc:
        click.echo(f"grafana refused: {exc.status_code} {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"{posted} deploy annotation(s) posted, {len(deploys) - posted} already there")
