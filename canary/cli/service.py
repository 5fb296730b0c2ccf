"""Commands of the service: ``canary serve``, ``canary deploy start|list``, ``canary verdict``.

``serve`` runs a replica. The deploy commands are thin HTTP clients of a running service (the
deploy pipeline reaches the service, not its database): ``--url`` or ``$CANARY_URL``, and the
write token from ``$CANARY_API_TOKEN``. ``verdict`` exits 0 on PASS, 1 on FAIL and 2 on
INCONCLUSIVE, on a verdict still pending, or on an error, so it can gate a CI/CD step.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from canary.cli.common import config_option, data_dir_option, fail_config, load_or_exit
from canary.cli.output import OutputFormat, format_option

url_option = click.option(
    "--url", envvar="CANARY_URL", default="http://127.0.0.1:8080", show_default=True, help="canary service."
)
token_option = click.option(
    "--token", envvar="CANARY_API_TOKEN", default=None, help="Bearer token for writes ($CANARY_API_TOKEN)."
)


@click.command("serve")
@config_option
@data_dir_option
@click.option("--host", default=None, help="Listen address (service.host).")
@click.option("--port", type=int, default=None, help="Listen port (service.port).")
@click.option(
    "--shard", default=None, help="A static share of the cells, i/N (service.shard); default: shared."
)
@click.option("--log-level", default="INFO", show_default=True)
def serve_command(
    config_path: Path,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    shard: str | None,
    log_level: str,
) -> None:
    """Run the service: scheduled probes, detection, alerts, verdicts, HTTP API and /metrics.

    Replicas sharing one database split the cells over the live replicas (a dead one's cells are
    taken over), or each take a static --shard i/N; detection, alert dispatch and verdicts run on
    the replica holding the leader lease. SIGTERM or Ctrl-C shuts down gracefully.
    """
    import anyio

    from canary.config.secrets import reveal
    from canary.errors import ConfigError
    from canary.logs import configure_logging
    from canary.probing.catalog import load_catalog
    from canary.probing.equivalence_runs import load_scheduled
    from canary.probing.scheduler import Shard
    from canary.service.app import check_spool_dir
    from canary.storage.engine import database

    configure_logging(log_level)
    # Every section, [detection] and [alerts] included, is validated here, before the port is bound.
    config = load_or_exit(config_path)
    try:
        catalog = load_catalog(config.probes_dir)
        load_scheduled(config.probes_dir, config.service.schedule)  # a bad file fails here, exit 2
        overrides = {k: v for k, v in {"host": host, "port": port, "shard": shard}.items() if v is not None}
        spec = config.service.model_copy(update=overrides)
        parsed_shard = Shard.parse(spec.shard) if spec.shard else None
        check_spool_dir(spec, config.path)
    except ConfigError as exc:
        fail_config(exc)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None
    token = reveal(config.api_token)
    with database(config.database_url, data_dir or config.data_dir) as url:
        anyio.run(_serve, config, catalog, url, spec, token, parsed_shard)


async def _serve(*args: Any) -> None:
    import anyio

    from canary.service.app import Service, detection_duties

    config, catalog, url, spec, token, shard = args
    service = Service(
        config, catalog, url, spec, token=token, shard=shard, extra_duties=detection_duties(config)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                service.stop()
                break
        tg.cancel_scope.deadline = anyio.current_time() + spec.shutdown_grace_s + 15


def api_call(method: str, url: str, path: str, token: str | None = None, body: Any = None) -> Any:
    """One API request; exits 2 with the server's message on an error."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        die(f"cannot reach {url}: {type(exc).__name__}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        die(f"{response.status_code}: {detail}")
    return response.json()


def die(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group("deploy")
def deploy_group() -> None:
    """Register deploys for canary verdicts and list them."""


@deploy_group.command("start")
@url_option
@token_option
@click.argument("name")
@click.option(
    "--canary",
    "canary_cells",
    multiple=True,
    required=True,
    help="Canary cell globs; !glob excludes (repeatable).",
)
@click.option(
    "--baseline", "baseline_cells", multiple=True, required=True, help="Baseline cell globs; !glob excludes."
)
@click.option("--duration", "duration_s", type=float, default=None, help="Window in seconds (default 900).")
@click.option("--started-at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the deploy as JSON.")
def deploy_start(
    url: str,
    token: str | None,
    name: str,
    canary_cells: tuple[str, ...],
    baseline_cells: tuple[str, ...],
    duration_s: float | None,
    started_at: datetime | None,
    as_json: bool,
) -> None:
    """Start a deploy NAME: burst probes on canary and baseline cells and judge the canary."""
    body: dict[str, Any] = {
        "name": name,
        "canary_cells": list(canary_cells),
        "baseline_cells": list(baseline_cells),
    }
    if duration_s is not None:
        body["duration_s"] = duration_s
    if started_at is not None:
        body["started_at"] = started_at.isoformat()
    deploy = api_call("POST", url, "/api/deploys", token, body)
    click.echo(json.dumps(deploy, indent=2) if as_json else deploy["id"])


@deploy_group.command("list")
@url_option
@click.option("--limit", default=20, show_default=True)
def deploy_list(url: str, limit: int) -> None:
    """The latest deploys and their verdicts."""
    for d in api_call("GET", url, f"/api/deploys?limit={limit}"):
        click.echo(f"{d['id']}  {d['name']:<24} {d['verdict']:<12} {d['started_at']}  {d['reason']}")


@click.command("verdict")
@url_option
@click.argument("deploy")
@click.option("--wait", is_flag=True, help="Wait until the verdict is decided.")
@click.option(
    "--timeout", "timeout_s", type=float, default=3600.0, show_default=True, help="Give up waiting."
)
@click.option("--poll", "poll_s", type=float, default=10.0, show_default=True)
@format_option("the verdict's metrics (json: the whole verdict)")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
def verdict_command(
    url: str,
    deploy: str,
    wait: bool,
    timeout_s: float,
    poll_s: float,
    output_format: OutputFormat,
    as_json: bool,
) -> None:
    """The verdict of DEPLOY (id or name): exit 0 PASS, 1 FAIL, 2 INCONCLUSIVE / pending / error.

    Metric names and notes are printed whole, also when the output is a CI log or a pipe.
    """
    deadline = time.monotonic() + timeout_s
    view = api_call("GET", url, f"/api/deploys/{deploy}")
    while wait and not view["decided"] and time.monotonic() < deadline:
        time.sleep(max(0.1, min(poll_s, deadline - time.monotonic())))
        view = api_call("GET", url, f"/api/deploys/{deploy}")
    print_verdict(view, "json" if as_json else output_format)
    sys.exit(view["exit_code"] if view["decided"] else 2)


def print_verdict(view: dict[str, Any], output_format: OutputFormat = "table") -> None:
    """The verdict line, then one row per metric (or the whole view as JSON)."""
    from rich.table import Table

    from canary.cli.output import console_for_output, emit

    console = console_for_output()
    if output_format != "json":
        # Plain output is only the rows on stdout (for awk); the verdict line goes to stderr there.
        heading = f"{view['name']} ({view['id']}): {view['verdict']} — {view['reason']}"
        on = console if output_format == "table" else console_for_output(stderr=True)
        on.print(heading, markup=False, highlight=False)  # a reason may hold [brackets]
    table = Table("metric", "outcome", "canary", "baseline", "effect", "p", "n (c/b)", "note")
    for m in view["metrics"]:

        def fmt(v: float | None, spec: str = ".3g") -> str:
            return "—" if v is None else format(v, spec)

        flags = " ".join(f for f, on in (("critical", m["critical"]), ("muted", m["muted"])) if on)
        table.add_row(
            m["metric"], m["outcome"], fmt(m["canary_rate"]), fmt(m["baseline_rate"]), fmt(m["effect"]),
            fmt(m["p_value"], ".2g"), f"{m['canary_n']}/{m['baseline_n']}", flags,
        )  # fmt: skip
    emit(output_format, table, view, console)
