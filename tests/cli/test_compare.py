"""``canary compare`` on the loopback reference fleet: a quantized pool is different, a healthy one is not."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from canary.cli.compare import compare_command
from canary.config.loader import build_config
from canary.errors import ConfigError
from canary.fleet import default_fleet_config, fleet_targets
from canary.fleet.running import RunningFleet, run_fleet_in_thread

BROKEN = "canary-small/cloud-a/short-context"


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    with run_fleet_in_thread(default_fleet_config()) as running:
        yield running


def write_config(fleet: RunningFleet, path: Path) -> Path:
    targets = [
        t
        for t in fleet_targets(fleet.config, fleet.base_url, provider="openai-completions", front_doors=False)
        if t["model"] == "canary-small"
    ]
    lines = []
    for t in targets:
        lines.append("[[targets]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in t.items() if key != "served_by_headers")
    path.write_text("\n".join(lines) + "\n")
    return path


def compare(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        compare_command, ["--config", str(config), "--budget-tokens", "1500", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


def test_a_quantized_pool_is_different_from_its_peers(fleet: RunningFleet, tmp_path: Path) -> None:
    fleet.set_fault(fault="quantize", platform="cloud-a", pool="short-context", intensity=1.0)
    try:
        code, output = compare(write_config(fleet, tmp_path / "canary.toml"), "--cells", BROKEN)
    finally:
        fleet.clear_faults()
    assert code == 1, output
    assert "forced" in output and "different" in output and "DIFFERENT" in output


def test_a_healthy_pool_is_equivalent_to_its_peers(fleet: RunningFleet, tmp_path: Path) -> None:
    fleet.clear_faults()
    config = write_config(fleet, tmp_path / "canary.toml")
    cell = "canary-small/cloud-b/short-context"  # fp32 among bf16 peers: healthy all the same
    code, output = compare(config, "--cells", cell, "--against", "canary-small/*")
    assert code == 0, output
    assert "equivalent" in output and "different" not in output


def test_forced_on_a_provider_without_prompt_logprobs_names_the_key() -> None:
    table = {
        "model": "m",
        "platform": "p",
        "pool": "q",
        "provider": "openai-chat",
        "base_url": "http://127.0.0.1:1/v1",
        "model_id": "m",
        "equivalence": ["forced"],
    }
    with pytest.raises(ConfigError, match=r"targets\[0\].*forced.*openai-chat"):
        build_config({"targets": [table]}, "canary.toml")


def test_compare_has_help() -> None:
    result = CliRunner().invoke(compare_command, ["--help"])
    assert result.exit_code == 0 and "--budget-tokens" in result.output and "--against" in result.output


def test_a_peer_that_does_not_answer_is_a_gap_in_the_evidence_not_a_crash(
    fleet: RunningFleet, tmp_path: Path
) -> None:
    fleet.clear_faults()
    config = write_config(fleet, tmp_path / "canary.toml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = {"model": "canary-small", "platform": "nowhere", "pool": "x", "provider": "openai-completions"}
    down |= {"base_url": f"http://127.0.0.1:{port}/v1", "model_id": "canary-small", "timeout_s": 2}
    with config.open("a") as f:
        f.write("[[targets]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in down.items()))
    code, output = compare(config, "--cells", "canary-small/cloud-a/long-context")
    assert code == 0, output
    assert "canary-small/nowhere/x:" in output and "requests failed" in output
