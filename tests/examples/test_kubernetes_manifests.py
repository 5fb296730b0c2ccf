"""examples/kubernetes: every manifest validates offline against the Kubernetes schemas, and the
pieces fit together (config, secrets, probes, ports, the ServiceMonitor's selector)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from canary.config.loader import build_config

DIR = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
K8S_VERSION = "1.30"


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the manifest (one document per file)."""
    out = {}
    for path in sorted(DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[doc["kind"]] = doc
    return out


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret", "Job", "Deployment", "Service"])
def test_core_manifests_validate_strictly_against_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(manifests()[kind], K8S_VERSION, strict=True)


def test_the_service_monitor_selects_the_service_and_scrapes_metrics() -> None:
    docs = manifests()
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    # A CRD: the package has no schema for it, so its fields are checked here.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(monitor, K8S_VERSION)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert monitor["spec"]["endpoints"][0]["port"] in ports


def test_the_deployment_probes_health_and_readiness_and_takes_no_shard() -> None:
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert not any("shard" in a for a in container["args"])  # cells are split by membership
    assert docs["Deployment"]["spec"]["replicas"] > 1
    config = tomllib.loads(docs["ConfigMap"]["data"]["canary.toml"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": config["service"]["port"]}
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert docs["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_every_env_reference_of_the_config_comes_from_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = manifests()
    text = docs["ConfigMap"]["data"]["canary.toml"]
    wanted = set(re.findall(r'"env:([A-Z_]+)"', text))
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e
    }
    assert wanted == set(from_secret) and set(from_secret.values()) <= set(docs["Secret"]["stringData"])
    for name in wanted:
        monkeypatch.setenv(name, "postgresql://u:p@db/canary" if name == "DATABASE_URL" else "x")
    config = build_config(tomllib.loads(text), "canary.toml")
    assert len(config.targets) == 2 and config.service.host == "0.0.0.0"


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((DIR / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
    present = {p.name for p in DIR.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
