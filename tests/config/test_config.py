"""Config validation names file, key path and problem; secrets resolve from env and never print."""

from __future__ import annotations

import subprocess
import sys

import pytest

from canary.config.loader import Secret, load_config
from canary.errors import ConfigError, SecretError

GOOD = """
[defaults]
timeout_s = 10

[[targets]]
model = "m"
platform = "p"
pool = "short-context"
provider = "openai-chat"
base_url = "http://127.0.0.1:9/v1/"
model_id = "m-1"
api_key = "env:CANARY_TEST_KEY"
[targets.headers]
x-extra = "env:CANARY_TEST_HEADER"
"""


def test_targets_get_defaults_and_secrets_resolved(write_toml, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANARY_TEST_KEY", "sk-live-123")
    monkeypatch.setenv("CANARY_TEST_HEADER", "hdr-456")
    config = load_config(write_toml(GOOD))
    t = config.targets[0]
    assert t.cell == "m/p/short-context"
    assert t.timeout_s == 10 and t.concurrency == 4
    assert t.spec.base_url == "http://127.0.0.1:9/v1"
    assert isinstance(t.api_key, Secret) and t.api_key.reveal() == "sk-live-123"
    assert "sk-live-123" not in repr(t) and "hdr-456" not in repr(t)
    assert t.resolved_headers() == {"x-extra": "hdr-456"}


def test_unset_secret_names_the_variable_and_key_not_a_value(write_toml, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CANARY_TEST_KEY", raising=False)
    path = write_toml(GOOD)
    with pytest.raises(SecretError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: targets[0].api_key: environment variable CANARY_TEST_KEY is not set"


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        (
            "[[targets]]\nmodel='m'\nplatform='p'\npool='q'\nprovider='openai-chat'\nmodel_id='x'\n",
            "targets[0]",
            "needs 'base_url'",
        ),
        (
            "[[targets]]\nmodel='m'\nplatform='p'\npool='q'\nprovider='grpc'\nbase_url='http://x'\nmodel_id='x'\n",
            "targets[0].provider",
            "Input should be",
        ),
        (
            "[[targets]]\nmodel='m'\nplatform='p'\npool='q'\nprovider='anthropic'\nbase_url='ftp://x'\nmodel_id='x'\n",
            "targets[0].base_url",
            "must start with http",
        ),
        ("[defaults]\ntimeout_s = -1\n", "defaults.timeout_s", "greater than 0"),
        ("[defaults]\ntimeotu_s = 3\n", "defaults.timeotu_s", "unknown key"),
        ("[[targets]]\nplatform='p'\n", "targets[0].model", "required key is missing"),
    ],
)
def test_validation_errors_name_file_key_and_problem(write_toml, body, key, problem) -> None:  # type: ignore[no-untyped-def]
    path = write_toml(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.path == str(path)
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_toml_syntax_error_names_the_file(write_toml) -> None:  # type: ignore[no-untyped-def]
    path = write_toml("[[targets]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_duplicate_cells_are_rejected(write_toml) -> None:  # type: ignore[no-untyped-def]
    one = "[[targets]]\nmodel='m'\nplatform='p'\npool='q'\nprovider='openai-chat'\nbase_url='http://x'\nmodel_id='x'\n"
    with pytest.raises(ConfigError, match=r"targets\[1\]: duplicate cell m/p/q"):
        load_config(write_toml(one + one))


def test_cli_reports_config_errors_with_exit_code_2(write_toml) -> None:  # type: ignore[no-untyped-def]
    path = write_toml("[defaults]\nconcurrency = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "canary", "run", "--once", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{path}: defaults.concurrency: " in proc.stderr


def test_example_config_is_valid(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("DATABASE_URL", "OWN_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "x")
    config = load_config("examples/canary.toml")
    assert len(config.targets) == 3
