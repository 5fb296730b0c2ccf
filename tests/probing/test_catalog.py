"""The probe catalog: loading, validation messages, content versions and needle prompts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import regex

from canary.errors import ConfigError
from canary.probing.catalog import CHARS_PER_TOKEN, Probe, ProbeSpec, load_catalog, render_prompts

CATALOG = load_catalog()


def _write(tmp_path: Path, body: str, name: str = "set.toml") -> Path:
    (tmp_path / name).write_text(body, encoding="utf-8")
    return tmp_path


MINIMAL = """
[[probe]]
id = "p1"
prompt = "Say hi."
reference_answer = "Hi."
scorers = ["unexpected_script"]
"""


def test_the_catalog_has_at_least_sixty_probes_with_unique_ids() -> None:
    ids = [p.id for p in CATALOG.probes]
    assert len(ids) >= 60
    assert len(ids) == len(set(ids))


def test_the_catalog_covers_every_required_kind_of_probe() -> None:
    languages = Counter(p.spec.code_language for p in CATALOG.probes if p.spec.code_language)
    assert {lang: n >= 3 for lang, n in languages.items()} == dict.fromkeys(
        ["python", "javascript", "sql", "bash", "json"], True
    )
    scripts = {s for p in CATALOG.probes for s in p.spec.allowed_scripts}
    assert {"Hangul", "Han", "Hiragana", "Katakana"} <= scripts
    assert sum(p.spec.answer is not None and p.spec.answer.kind == "numeric" for p in CATALOG.probes) >= 5
    assert sum(p.spec.repeat > 1 and "determinism" in p.spec.scorers for p in CATALOG.probes) >= 5
    sizes = sorted(p.spec.context_tokens or 0 for p in CATALOG.probes if p.spec.needle is not None)
    assert len(sizes) >= 3 and sizes[0] <= 1000 and sizes[-1] >= 32000


def test_cjk_probes_expect_their_native_script_in_the_reference_answer() -> None:
    native = {"ko-": r"\p{Hangul}", "zh-": r"\p{Han}", "ja-": r"[\p{Hiragana}\p{Katakana}\p{Han}]"}
    checked = 0
    for probe in CATALOG.probes:
        for prefix, pattern in native.items():
            if probe.id.startswith(prefix):
                checked += 1
                assert regex.search(pattern, probe.spec.reference_answer), probe.id
    assert checked >= 12


def test_reference_answers_are_short_enough_for_the_fleet_to_generate() -> None:
    assert max(len(p.spec.reference_answer) for p in CATALOG.probes) <= 400


def test_repeated_determinism_probes_run_at_temperature_zero() -> None:
    assert all(p.spec.temperature == 0.0 for p in CATALOG.probes if p.spec.repeat > 1)


def test_the_same_content_gives_the_same_version_and_a_changed_prompt_a_new_one() -> None:
    spec = ProbeSpec(id="a", prompt="Say hi.", reference_answer="Hi.", scorers=("answered",))
    same = Probe.from_spec(ProbeSpec(**spec.model_dump()), "other-set")
    changed = Probe.from_spec(spec.model_copy(update={"prompt": "Say hello."}), "set")
    assert Probe.from_spec(spec, "set").version == same.version
    assert Probe.from_spec(spec, "set").version != changed.version
    assert len(same.version) == 16


def test_defaults_are_merged_into_each_probe(tmp_path: Path) -> None:
    body = '[defaults]\ntemperature = 0.0\nallowed_scripts = ["Hangul", "Latin"]\nmax_tokens = 99\n' + MINIMAL
    [probe] = load_catalog(_write(tmp_path, body)).probes
    assert probe.spec.allowed_scripts == ("Hangul", "Latin")
    assert probe.spec.max_tokens == 99
    assert probe.probe_set == "set"


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('scorers = ["unexpected_scripts"]', "probe[0].scorers", "unknown scorer 'unexpected_scripts'"),
        ('allowed_scripts = ["Klingon"]', "probe[0].allowed_scripts", "'Klingon' is not a Unicode script"),
        ('scorers = ["code_syntax"]\ncode_language = "cobol"', "probe[0].code_language", "Input should be"),
        ('scorers = ["determinism"]\ntemperature = 0.7', "probe[0]", "needs temperature = 0"),
        ('scorers = ["argmax_conformance"]', "probe[0]", "needs logprobs = true"),
        ('scorers = ["long_context_recall"]', "probe[0]", "needs a [probe.needle] table"),
        ('scorers = ["known_answer"]', "probe[0]", "needs an [probe.answer] table"),
        (
            'answer = { kind = "choice", value = "E", choices = ["A", "B"] }',
            "probe[0].answer",
            "'value' among them",
        ),
        (
            'answer = { kind = "regex", pattern = "(unclosed" }',
            "probe[0].answer",
            "not a valid regular expression",
        ),
        ('answer = { kind = "numeric", value = "many" }', "probe[0].answer", "needs a number"),
        ('promt = "typo"', "probe[0].promt", "unknown key"),
    ],
)
def test_invalid_probes_name_the_file_key_and_problem(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    lines = MINIMAL.strip().splitlines()
    lines = [ln for ln in lines if not (extra.startswith("scorers") and ln.startswith("scorers"))]
    _write(tmp_path, "\n".join([*lines, extra]) + "\n")
    with pytest.raises(ConfigError) as info:
        load_catalog(tmp_path)
    assert info.value.path.endswith("set.toml")
    assert info.value.key == key
    assert problem in info.value.problem


def test_a_needle_whose_statement_lacks_the_secret_is_rejected(tmp_path: Path) -> None:
    body = (
        MINIMAL
        + "context_tokens = 500\n"
        + 'needle = { statement = "No secret here.", secret = "x-1", filler = ["a."] }\n'
    )
    with pytest.raises(ConfigError, match="must contain its 'secret'"):
        load_catalog(_write(tmp_path, body))


def test_duplicate_ids_across_files_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path, MINIMAL, "a.toml")
    _write(tmp_path, MINIMAL, "b.toml")
    with pytest.raises(ConfigError, match="duplicate id"):
        load_catalog(tmp_path)


def test_select_matches_ids_and_sets_by_glob() -> None:
    assert {p.probe_set for p in CATALOG.select("code-*")} == {
        "code-python",
        "code-javascript",
        "code-sql",
        "code-bash",
    }
    assert [p.id for p in CATALOG.select("en-capital-france")] == ["en-capital-france"]
    assert CATALOG.by_id("ko-capital").spec.allowed_scripts == ("Hangul", "Latin")


def test_a_probe_can_carry_a_completion_style_prompt() -> None:
    probe = CATALOG.by_id("en-capital-france")
    assert probe.request("completion").prompt == "Q: What is the capital of France?\nA:"
    chat = probe.request("chat")
    assert chat.messages[0].content == probe.spec.prompt
    assert chat.prompt is None


def test_needle_prompts_are_built_deterministically_at_the_configured_size() -> None:
    probe = CATALOG.by_id("longctx-needle-8k")
    needle = probe.spec.needle
    assert needle is not None
    prompt = probe.request("chat").messages[0].content
    assert prompt == render_prompts(probe.spec).chat
    assert prompt.count(needle.statement) == 1
    assert prompt.endswith(probe.spec.prompt)
    target = 8000 * CHARS_PER_TOKEN
    assert 0.95 * target <= len(prompt) <= 1.05 * target
    position = prompt.index(needle.statement) / len(prompt)
    assert abs(position - needle.depth) < 0.05
    completion_prompt = probe.request("completion").prompt
    assert completion_prompt is not None and needle.statement in completion_prompt


def test_needle_sizes_make_different_prompts_and_versions() -> None:
    small, large = CATALOG.by_id("longctx-needle-1k"), CATALOG.by_id("longctx-needle-32k")
    assert len(large.prompt) > 20 * len(small.prompt)
    assert small.version != large.version


def test_changing_the_needle_filler_makes_a_new_version() -> None:
    probe = CATALOG.by_id("longctx-needle-1k")
    assert probe.spec.needle is not None
    needle = probe.spec.needle.model_copy(update={"filler": ("Different filler text.",)})
    changed = Probe.from_spec(probe.spec.model_copy(update={"needle": needle}), probe.probe_set)
    assert changed.version != probe.version
    assert changed.prompt != probe.prompt


def test_a_probe_built_without_prompts_renders_them_on_demand() -> None:
    probe = CATALOG.by_id("longctx-needle-1k")
    bare = Probe(spec=probe.spec, probe_set=probe.probe_set, version=probe.version, source="")
    assert bare.request("chat") == probe.request("chat")


def test_select_takes_globs_over_ids_and_sets_with_exclusions() -> None:
    catalog = load_catalog()
    code = catalog.select("code-*,!code-sql")
    assert code and {p.probe_set for p in code} == {"code-bash", "code-javascript", "code-python"}
    everything_but_xl = catalog.select("!longctx-xl")
    assert len(everything_but_xl) == len(catalog.probes) - len(catalog.select("longctx-xl"))
    assert catalog.select("en-capital-france") == [catalog.by_id("en-capital-france")]


SESSION = """
session = true

[defaults]
scorers = ["unexpected_script"]

[[probe]]
id = "s1"
prompt = "My name is Ada."
completion_prompt = "Q: My name is Ada.\\nA:"
reference_answer = "Hello, Ada."

[[probe]]
id = "s2"
prompt = "What is my name?"
reference_answer = "Ada."

[[probe]]
id = "s3"
prompt = "Spell it backwards."
reference_answer = "adA"
"""


def test_a_session_file_loads_its_probes_as_turns_in_file_order(tmp_path: Path) -> None:
    _write(tmp_path, MINIMAL, "plain.toml")
    catalog = load_catalog(_write(tmp_path, SESSION, "talk.toml"))
    assert [(p.id, p.turn) for p in catalog.probes] == [("p1", None), ("s1", 0), ("s2", 1), ("s3", 2)]
    assert {p.probe_set for p in catalog.probes if p.turn is not None} == {"talk"}


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        (SESSION.replace('id = "s2"', 'id = "s2"\nrepeat = 3'), "probe[1].repeat", "repeat must be 1"),
        (SESSION.replace("[defaults]", "[defaults]\nrepeat = 2"), "probe[0].repeat", "repeat must be 1"),
        (SESSION.split('[[probe]]\nid = "s2"')[0], "probe", "needs at least 2 probes"),
        (SESSION.replace("session = true", "sesion = true"), "sesion", "unknown key"),
    ],
)
def test_invalid_session_sets_name_the_file_key_and_problem(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, body))
    assert info.value.path.endswith("set.toml")
    assert info.value.key == key
    assert problem in info.value.problem


def test_changing_the_first_turn_makes_new_versions_of_every_later_turn(tmp_path: Path) -> None:
    before = load_catalog(_write(tmp_path, SESSION)).probes
    after = load_catalog(_write(tmp_path, SESSION.replace("My name is Ada.", "My name is Grace."))).probes
    assert all(a.version != b.version for a, b in zip(after, before, strict=True))
    edited_last = load_catalog(_write(tmp_path, SESSION.replace("Spell it", "Write it"))).probes
    assert [p.version == b.version for p, b in zip(edited_last, before, strict=True)] == [True, True, False]


def test_a_session_turn_has_another_version_than_the_same_probe_on_its_own(tmp_path: Path) -> None:
    turns = load_catalog(_write(tmp_path, SESSION)).probes
    alone = load_catalog(_write(tmp_path, SESSION.replace("session = true", ""))).probes
    assert all(t.version != a.version for t, a in zip(turns, alone, strict=True))


def test_ordinary_probe_versions_are_the_ones_recorded_before_sessions_existed(tmp_path: Path) -> None:
    """Stored runs point at these versions: the session change must not have moved them."""
    [probe] = load_catalog(_write(tmp_path, MINIMAL)).probes
    assert probe.version == "53825557f7e99983"
    spec = ProbeSpec(id="a", prompt="Say hi.", reference_answer="Hi.", scorers=("answered",))
    assert Probe.from_spec(spec, "set").version == "0a478d343c466c8b"


def test_selecting_one_turn_selects_its_whole_session(tmp_path: Path) -> None:
    _write(tmp_path, MINIMAL, "plain.toml")
    catalog = load_catalog(_write(tmp_path, SESSION, "talk.toml"))
    assert [p.id for p in catalog.select("s2")] == ["s1", "s2", "s3"]
    assert [p.id for p in catalog.select("!talk")] == ["p1"]
    assert [p.id for p in catalog.select("p1")] == ["p1"]


def test_a_turns_request_carries_the_conversation_so_far(tmp_path: Path) -> None:
    s1, s2, s3 = load_catalog(_write(tmp_path, SESSION)).probes
    history = [(s1, "Hello, Ada."), (s2, " Ada.\n")]
    chat = s3.request("chat", session_key="k", history=history)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello, Ada."),
        ("user", "What is my name?"),
        ("assistant", " Ada.\n"),
        ("user", "Spell it backwards."),
    ]
    assert chat.session_key == "k"
    completion = s3.request("completion", history=history)
    assert completion.prompt == (
        "Q: My name is Ada.\nA:Hello, Ada.\n\nWhat is my name?\n\n Ada.\n\nSpell it backwards.\n\n"
    )
