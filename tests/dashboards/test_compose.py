"""docker-compose.yml and the Grafana provisioning parse, point at files that exist, and agree
with each other and with examples/compose.toml (Docker itself is not available to the tests)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from dashkit import ROOT, load_dashboards

from canary.config.loader import load_config
from canary.fleet.config import default_fleet_config, fleet_targets


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return read_yaml(ROOT / "docker-compose.yml")


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path for the bind mounts of a service."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("."):
            found[container] = ROOT / host
    return found


def test_compose_runs_postgres_grafana_the_fleet_and_the_canary_service() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "grafana", "fleet", "canary"}
    canary = services["canary"]
    assert canary["command"][0] == "serve"
    assert canary["environment"]["CANARY_CONFIG"] == "/app/examples/compose.toml"
    assert "8080:8080" in canary["ports"]
    assert mounts(canary)["/app/examples"] == ROOT / "examples"
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert services["grafana"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_grafana_mounts_provisioning_and_dashboards_that_exist() -> None:
    grafana = compose()["services"]["grafana"]
    paths = mounts(grafana)
    provisioning = paths["/etc/grafana/provisioning"]
    dashboards = paths["/var/lib/grafana/dashboards/canary"]
    assert {p.name for p in dashboards.glob("*.json")} == {"overview.json", "cell.json", "deploys.json"}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/var/lib/grafana/dashboards/canary/")
    assert (dashboards / Path(home).name).exists()

    [provider] = read_yaml(provisioning / "dashboards" / "canary.yaml")["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/canary"
    [source] = read_yaml(provisioning / "datasources" / "canary.yaml")["datasources"]
    postgres = compose()["services"]["postgres"]["environment"]
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["url"] == "postgres:5432"
    assert (source["user"], source["jsonData"]["database"], source["secureJsonData"]["password"]) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
        postgres["POSTGRES_PASSWORD"],
    )
    # Every dashboard query names the provisioned data source.
    for dashboard in load_dashboards().values():
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"]


def test_the_service_database_url_reaches_the_compose_postgres() -> None:
    services = compose()["services"]
    url = services["canary"]["environment"]["DATABASE_URL"]
    env = services["postgres"]["environment"]
    assert (
        url
        == f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )


def test_compose_toml_probes_every_fleet_cell_at_the_fleet_service() -> None:
    path = ROOT / "examples" / "compose.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert raw["targets"] == fleet_targets(default_fleet_config(), "http://fleet:8100")
    config = load_config(path)
    assert len(config.targets) == 18
    assert raw["service"]["host"] == "0.0.0.0" and raw["service"]["port"] == 8080
    fleet = compose()["services"]["fleet"]
    assert fleet["command"][fleet["command"].index("--port") + 1] == "8100"


def test_the_image_carries_the_dashboards_for_canary_dashboards_push() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY dashboards ./dashboards" in dockerfile
