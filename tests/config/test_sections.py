"""The whole canary.toml is checked when any command loads it: every section, every secret, exit 2.

The command-line tests run the real CLI in a subprocess from the config's directory, so the
message names the file as given (``canary.toml``), the dotted key path and the problem, and a
config error is never a traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from canary.config.loader import build_config, load_config
from canary.config.secrets import Secret
from canary.errors import ConfigError, SecretError

TARGET = (
    "[[targets]]\nmodel = 'm'\nplatform = 'p'\npool = 'q'\nprovider = 'openai-chat'\n"
    "base_url = 'http://127.0.0.1:9/v1'\nmodel_id = 'x'\n"
)
RECEIVER = "[[alerts.receivers]]\nname = 'ops'\nkind = 'webhook'\nurl = 'http://127.0.0.1:9/hook'\n"


def canary(cwd: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canary", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def assert_config_error(proc: subprocess.CompletedProcess[str], key: str, problem: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert f"canary.toml: {key}: {problem}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[database]\nurl_ = 'x'\n", "database.url_"),
        ("[defaults]\ntimeout = 3\n", "defaults.timeout"),
        (TARGET + "api_token = 'x'\n", "targets[0].api_token"),
        ("[detection]\nwindow_sec = 60\n", "detection.window_sec"),
        ("[alerts]\nfor_sec = 0\n", "alerts.for_sec"),
        (RECEIVER + "channel = '#ops'\n", "alerts.receivers[0].channel"),
        ("[service]\nportt = 8080\n", "service.portt"),
        ("[service.schedule]\nburst_s = 30\n", "service.schedule.burst_s"),
        ("[service.verdict]\nalpah = 0.05\n", "service.verdict.alpah"),
        ("[detecton]\nwindow_s = 60\n", "detecton"),
    ],
    ids=lambda v: v.split("\n")[0] if "\n" in v else v,
)
def test_canary_run_rejects_an_unknown_key_in_every_section(tmp_path: Path, body: str, key: str) -> None:
    (tmp_path / "canary.toml").write_text(body)
    assert_config_error(canary(tmp_path, "run", "--once", "--config", "canary.toml"), key, "unknown key")


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--once"],
        ["detect", "--once"],
        ["alerts", "list"],
        ["alerts", "dispatch", "--once"],
        ["db", "upgrade"],
        ["serve", "--port", "0"],
    ],
    ids=" ".join,
)
def test_every_command_that_loads_the_config_rejects_a_bad_detection_key(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "canary.toml").write_text(TARGET + "[detection]\nwindow_sec = 60\n")
    proc = canary(tmp_path, *command, "--config", "canary.toml")
    assert_config_error(proc, "detection.window_sec", "unknown key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("[detection]\nwindow_sec = 60\n", "detection.window_sec"),
        ("[alerts]\nfor_s = -1\n", "alerts.for_s"),
        (
            RECEIVER.replace("http://127.0.0.1:9/hook", "env:CANARY_TEST_UNSET_HOOK"),
            "alerts.receivers[0].url",
        ),
        ('[service]\nspool_dir = "/proc/canary-spool"\n', "service.spool_dir"),  # not writable
    ],
    ids=["detection", "alerts", "receiver-secret", "spool-dir"],
)
def test_serve_exits_2_before_it_binds_its_port(tmp_path: Path, section: str, key: str) -> None:
    """Before, [detection] and [alerts] were validated on first leadership: the replica bound its
    port, reported ready, then died with an ExceptionGroup traceback (exit 1)."""
    port = free_port()
    (tmp_path / "canary.toml").write_text(TARGET + section)
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary", "serve", "--config", "canary.toml", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            assert not listening(port), "canary serve bound its port despite a config error"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, stderr = proc.communicate()
    assert proc.returncode == 2, stderr
    assert f"canary.toml: {key}: " in stderr and "Traceback" not in stderr


def test_a_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "canary.toml").write_text(TARGET + "[detection\nwindow_s = 60\n")
    proc = canary(tmp_path, "detect", "--once", "--config", "canary.toml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "canary.toml: invalid TOML: " in proc.stderr and "(at line 8, column 11)" in proc.stderr


# --- in process -------------------------------------------------------------------------------


def test_every_section_is_a_typed_attribute_with_its_secrets_resolved(
    write_toml: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_TEST_HOOK", "http://127.0.0.1:9/secret-hook")
    monkeypatch.setenv("CANARY_TEST_TOKEN", "t0ken")
    config = load_config(
        write_toml(
            TARGET
            + "[detection]\nwindow_s = 600\nfalse_alarms_per_cell_year = 0.5\n[alerts]\nfor_s = 0\n"
            + RECEIVER.replace("http://127.0.0.1:9/hook", "env:CANARY_TEST_HOOK")
            + "[service]\nport = 9999\napi_token = 'env:CANARY_TEST_TOKEN'\n"
            + "[service.schedule]\nburst_interval_s = 7\n[service.verdict]\nmin_samples = 5\n"
        )
    )
    assert config.detection.window_s == 600 and config.detection.false_alarms_per_cell_year == 0.5
    assert config.alerts.for_s == 0 and [r.name for r in config.alerts.receivers] == ["ops"]
    (hook,) = config.receivers
    assert isinstance(hook.url, Secret) and hook.url.reveal() == "http://127.0.0.1:9/secret-hook"
    assert "secret-hook" not in repr(config)
    assert config.service.port == 9999 and config.schedule.burst_interval_s == 7
    assert config.verdicts.min_samples == 5
    assert isinstance(config.api_token, Secret) and config.api_token.reveal() == "t0ken"
    assert "t0ken" not in repr(config)


def test_sections_left_out_take_their_defaults() -> None:
    config = build_config({}, "canary.toml")
    assert config.detection.window_s == 3600 and config.alerts.receivers == []
    assert config.receivers == () and config.service.port == 8080 and config.api_token is None


PAGER = {"name": "pd", "kind": "pagerduty", "routing_key": "env:CANARY_TEST_UNSET_PD"}
SIGNED = {"name": "w", "kind": "webhook", "url": "http://x", "secret": "env:CANARY_TEST_UNSET_KEY"}


@pytest.mark.parametrize(
    ("data", "key", "variable"),
    [
        ({"alerts": {"receivers": [PAGER]}}, "alerts.receivers[0].routing_key", "CANARY_TEST_UNSET_PD"),
        ({"alerts": {"receivers": [SIGNED]}}, "alerts.receivers[0].secret", "CANARY_TEST_UNSET_KEY"),
        (
            {"service": {"api_token": "env:CANARY_TEST_UNSET_TOKEN"}},
            "service.api_token",
            "CANARY_TEST_UNSET_TOKEN",
        ),
    ],
)
def test_unset_secrets_in_every_section_are_errors_at_load(
    data: dict[str, object], key: str, variable: str
) -> None:
    with pytest.raises(SecretError) as err:
        build_config(data, "canary.toml")
    assert str(err.value) == f"canary.toml: {key}: environment variable {variable} is not set"


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"alerts": {"receivers": [{"name": "a", "kind": "slack", "url": "http://x"}] * 2}},
         "alerts.receivers[1].name", "duplicate receiver name 'a'"),
        ({"detection": {"window_s": 86400}}, "detection", "'window_s' must not exceed 'history_s'"),
        ({"service": {"shard": "2/2"}}, "service.shard", "shard index must be in 0..1"),
        ({"service": {"shard": "half"}}, "service.shard", "shard must look like i/N"),
        ({"service": {"verdict": {"alpha": 2}}}, "service.verdict.alpha", "less than 1"),
        ({"service": {"outage_buffer_s": 0}}, "service.outage_buffer_s", "greater than 0"),
        ({"service": {"outage_buffer_s": 30 * 86400}}, "service.outage_buffer_s", "less than or equal"),
        ({"service": {"outage_memory_runs": -1}}, "service.outage_memory_runs", "greater than or equal to 0"),
        ({"service": {"leader_lease_s": 0.2}}, "service.leader_lease_s", "greater than or equal to 1"),
        ({"service": {"heartbeat_s": 0}}, "service.heartbeat_s", "greater than or equal to 0.5"),
        ({"service": {"lock_retry_s": 5}}, "service", "'lock_retry_s' was removed"),
        ({"detection": {"baseline_confidence": 0.9}}, "detection", "'baseline_confidence' was removed"),
    ],
)  # fmt: skip
def test_section_values_are_checked_at_load(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data, "canary.toml")
    assert err.value.key == key and problem in err.value.problem
