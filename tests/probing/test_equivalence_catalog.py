"""The equivalence probe catalog: shipped sections load; bad files name the file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.errors import ConfigError
from canary.probing.equivalence import load_equivalence, version


def test_the_shipped_equivalence_probes_cover_every_test_multilingual_and_code() -> None:
    catalog = load_equivalence()
    assert catalog.forced and catalog.greedy and catalog.sampled
    tags = {t for p in catalog.forced for t in p.tags}
    assert {"multilingual", "code"} <= tags
    assert all(p.continuation[:1].isspace() or not p.continuation[:1].isascii() for p in catalog.forced)
    assert len({version(p) for p in catalog.forced}) == len(catalog.forced)


def test_a_duplicate_id_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[[forced]]\nid = "x"\nprompt = "p"\ncontinuation = " c"\n')
    (tmp_path / "b.toml").write_text('[[greedy]]\nid = "x"\nprompt = "p"\nreference_answer = "r"\n')
    with pytest.raises(ConfigError, match=r"b\.toml.*greedy\[0\]\.id.*a\.toml"):
        load_equivalence(tmp_path)


def test_an_unknown_key_or_a_zero_temperature_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[sampled]]\nid = "s"\nprompt = "p"\nreference_answer = "r"\ntemperature = 0\n')
    with pytest.raises(ConfigError, match="temperature"):
        load_equivalence(tmp_path)
    path.write_text('[[forced]]\nid = "f"\nprompt = "p"\ncontinuation = " c"\nanswer = 1\n')
    with pytest.raises(ConfigError, match="answer"):
        load_equivalence(tmp_path)
