"""examples/prometheus/: rules valid, unit-tested with promtool, on series canary exports; a valid config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from canary.service.metrics import ServiceMetrics
from tests.prombin import binary

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_promtool_finds_the_rules_valid() -> None:
    result = promtool("check", "rules", "canary-rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_example_prometheus_config_that_loads_them_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", "canary-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_canary_series_the_rules_read_is_one_the_service_exports() -> None:
    exported: set[str] = set()
    for family in ServiceMetrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + s for s in suffixes}
    groups = yaml.safe_load((RULES / "canary-rules.yml").read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    used = set(re.findall(r"\bcanary_[a-z_]+", exprs))
    assert used and used <= exported, sorted(used - exported)
