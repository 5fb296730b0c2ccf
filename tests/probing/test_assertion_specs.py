"""Checks declared in probe files (``[[probe.assert]]``): loading, errors and versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from canary.cli import main
from canary.detection.queries import AVAILABILITY
from canary.errors import ConfigError
from canary.probing.assertions import RESERVED_METRICS, ContainsAssertion, JsonSchemaAssertion
from canary.probing.catalog import load_catalog
from canary.verdicts.deploys import LATENCY, REQUEST_ERRORS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "probes"

PROBE = """
[[probe]]
id = "first"
prompt = "Say hi."
reference_answer = "Hi."
scorers = ["answered"]

[[probe]]
id = "refund"
prompt = "What is the refund policy?"
reference_answer = "Refunds within 30 days with a receipt."
"""


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "x.toml").write_text(body, encoding="utf-8")
    return tmp_path


def test_a_probe_with_only_declared_checks_loads_them_in_order(tmp_path: Path) -> None:
    body = PROBE + (
        '[[probe.assert]]\nmetric = "refund-policy"\ntype = "contains"\nvalue = ["30 days", "receipt"]\n'
        '[[probe.assert]]\nmetric = "refund-json"\ntype = "json_schema"\nschema = { type = "object" }\n'
    )
    probe = load_catalog(_write(tmp_path, body)).by_id("refund")
    first, second = probe.spec.assertions
    assert isinstance(first, ContainsAssertion) and first.effective_mode == "all"
    assert isinstance(second, JsonSchemaAssertion) and second.json_schema == {"type": "object"}
    assert probe.spec.scorers == ()


@pytest.mark.parametrize(
    ("check", "key", "problem"),
    [
        ('metric = "m"\ntype = "regex"\npattern = "(unclosed"', "assert[0].pattern", "not a valid regular"),
        ('metric = "m"\ntype = "regexp"\npattern = "x"', "assert[0].type", "unknown assertion type 'regexp'"),
        ('metric = "m"\npattern = "x"', "assert[0].type", "required key is missing"),
        ('type = "equals"\nvalue = "x"', "assert[0].metric", "required key is missing"),
        ('metric = "m"\ntype = "equals"\nvalue = "x"\nvalues = []', "assert[0].values", "unknown key"),
        ('metric = "known_answer"\ntype = "equals"\nvalue = "x"', "assert[0].metric", "built-in metric"),
        ('metric = "availability"\ntype = "equals"\nvalue = "x"', "assert[0].metric", "built-in metric"),
        ('metric = "Has Space"\ntype = "equals"\nvalue = "x"', "assert[0].metric", "should match pattern"),
        ('metric = "m"\ntype = "contains"\nvalue = []', "assert[0].value", "at least one value"),
        ('metric = "m"\ntype = "contains"\nvalue = ["a"]\nmode = "some"', "assert[0].mode", "'any' or 'all'"),
        ('metric = "m"\ntype = "max_chars"\nvalue = -1', "assert[0].value", "greater than or equal to 0"),
        ('metric = "m"\ntype = "levenshtein_max"\nvalue = "Paris"', "assert[0].max_distance", "missing"),
        (
            'metric = "m"\ntype = "json_schema"\nschema = { type = "objekt" }',
            "assert[0].schema",
            "not a valid JSON Schema at type",
        ),
    ],
)
def test_a_bad_check_names_the_file_the_key_and_the_problem(
    tmp_path: Path, check: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, PROBE + "[[probe.assert]]\n" + check + "\n"))
    assert info.value.path.endswith("x.toml")
    assert info.value.key == f"probe[1].{key}"
    assert problem in info.value.problem


def test_checks_are_written_as_assert_tables_only(tmp_path: Path) -> None:
    check = '[[probe.assertions]]\nmetric = "m"\ntype = "max_chars"\nvalue = 10\n'
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, PROBE + check))
    assert info.value.key == "probe[1].assertions" and "[[probe.assert]]" in info.value.problem


def test_two_checks_of_one_probe_may_not_share_a_metric(tmp_path: Path) -> None:
    check = '[[probe.assert]]\nmetric = "m"\ntype = "max_chars"\nvalue = 10\n'
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, PROBE + check + check))
    assert info.value.key == "probe[1].assert[1].metric"
    assert "already the metric of probe[1].assert[0]" in info.value.problem


def test_a_probe_without_scorers_or_checks_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, PROBE))
    assert info.value.key == "probe[1]"
    assert "needs 'scorers' or [[probe.assert]]" in info.value.problem


def test_editing_a_check_makes_a_new_version_and_adding_none_keeps_the_old_one(tmp_path: Path) -> None:
    plain = PROBE + 'scorers = ["answered"]\n'
    before = load_catalog(_write(tmp_path, plain)).by_id("refund").version
    check = '[[probe.assert]]\nmetric = "short"\ntype = "max_chars"\nvalue = {}\n'
    with_check = load_catalog(_write(tmp_path, plain + check.format(100))).by_id("refund").version
    edited = load_catalog(_write(tmp_path, plain + check.format(200))).by_id("refund").version
    assert len({before, with_check, edited}) == 3
    assert load_catalog(_write(tmp_path, plain)).by_id("refund").version == before


def test_reserved_names_match_the_metrics_detection_and_verdicts_define() -> None:
    assert {AVAILABILITY, REQUEST_ERRORS, LATENCY} <= RESERVED_METRICS


def test_the_shipped_examples_load() -> None:
    catalog = load_catalog(EXAMPLES)
    assert sum(len(p.spec.assertions) for p in catalog.probes) >= 5


def test_canary_run_reports_a_bad_check_and_exits_2(tmp_path: Path) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "x.toml").write_text(PROBE + '[[probe.assert]]\nmetric = "m"\ntype = "regex"\npattern = "("\n')
    config = tmp_path / "canary.toml"
    config.write_text(
        'probes_dir = "probes"\n[[targets]]\nmodel = "m"\nplatform = "p"\npool = "a"\n'
        'provider = "openai-chat"\nbase_url = "http://127.0.0.1:9/v1"\nmodel_id = "m"\n'
    )
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(config)])
    assert result.exit_code == 2
    assert "x.toml: probe[1].assert[0].pattern: Value error, not a valid regular expression" in result.output
