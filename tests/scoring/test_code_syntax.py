"""code_syntax: the requested language's code parses; errors are located; other languages ignored."""

from __future__ import annotations

from typing import Any

import pytest

from canary.probing.catalog import Probe, ProbeSpec
from canary.probing.completion import Completion
from canary.scoring.base import Score, ScoringContext
from canary.scoring.code_syntax import CodeSyntaxScorer, extract_blocks


def _score(text: str, language: str, extract: str = "fenced", **completion: Any) -> Score:
    spec = ProbeSpec(
        id="t",
        prompt="p",
        reference_answer="r",
        scorers=("code_syntax",),
        code_language=language,  # type: ignore[arg-type]
        code_extract=extract,  # type: ignore[arg-type]
    )
    probe = Probe.from_spec(spec, "test")
    [score] = CodeSyntaxScorer().score(probe, Completion(ok=True, text=text, **completion), ScoringContext())
    return score


def _fence(language: str, code: str) -> str:
    return f"Here you go:\n\n```{language}\n{code}\n```\n\nHope this helps."


VALID = {
    "python": "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)\n",
    "javascript": "const add = (a, b) => a + b;\nfunction twice(f) { return (x) => f(f(x)); }",
    "sql": (
        "SELECT name, COUNT(*) AS n\nFROM orders o JOIN users u ON u.id = o.user_id\n"
        "GROUP BY name\nORDER BY n DESC;"
    ),
    "bash": 'for f in *.log; do\n  if [ -s "$f" ]; then gzip "$f"; fi\ndone',
    "json": '{"name": "canary", "tags": ["a", "b"], "count": 3}',
}

BROKEN = {
    "python": ("def mean(xs):\n    return sum(xs) / len(xs\n", 2),
    "javascript": ("const add = (a, b) => a + b;\nfunction twice(f) { return (x) => f(f(x); }", 2),
    "sql": ("SELECT name\nFROM users\nWHERE age > ;", 3),
    "bash": ("cd /var/log\nls -la | | wc -l\n", 2),
    "json": ('{"name": "canary",\n "tags": ["a", "b",]}', 2),
}


@pytest.mark.parametrize("language", sorted(VALID))
def test_valid_code_in_a_fenced_block_passes(language: str) -> None:
    score = _score(_fence(language, VALID[language]), language)
    assert score.passed, score.detail
    assert score.detail["blocks"] == 1


@pytest.mark.parametrize("language", sorted(BROKEN))
def test_a_syntax_error_fails_and_reports_its_line(language: str) -> None:
    code, line = BROKEN[language]
    score = _score(_fence(language, code), language)
    assert not score.passed
    assert score.detail["line"] == line, score.detail
    assert score.detail["column"] >= 1
    assert score.detail["answer_line"] == line + 3  # the fence opens on line 3 of the answer
    assert score.detail["message"]


def test_an_unterminated_bash_loop_fails() -> None:
    assert not _score(
        _fence("bash", 'for f in *.log; do\n  if [ -s "$f" ]; then gzip "$f"\ndone'), "bash"
    ).passed


def test_python_error_column_points_at_the_problem() -> None:
    score = _score(_fence("python", "x = 1\ny = (2 +\nz = 3"), "python")
    assert not score.passed
    assert (score.detail["line"], score.detail["column"]) == (2, 5)
    assert score.detail["snippet"] == "y = (2 +"
    assert "never closed" in score.detail["message"]


def test_a_broken_block_in_a_language_the_probe_did_not_ask_for_is_ignored() -> None:
    text = (
        "Install it first:\n\n```bash\npip install requests; if [ then\n```\n\n"
        "Then:\n\n```python\nimport requests\nprint(requests.get('https://example.org').status_code)\n```"
    )
    score = _score(text, "python")
    assert score.passed
    assert score.detail["blocks"] == 1


def test_every_block_in_the_requested_language_is_checked() -> None:
    text = _fence("python", "x = 1") + "\n\nAnd:\n\n" + _fence("py", "def f(:\n    pass")
    score = _score(text, "python")
    assert not score.passed
    assert score.detail["block"] == 1


def test_an_untagged_block_is_parsed_as_the_requested_language() -> None:
    assert not _score("```\nSELECT a FROM;\n```", "sql").passed
    assert _score("```\nSELECT 1;\n```", "sql").passed


def test_an_answer_without_any_code_block_fails_as_no_code() -> None:
    score = _score("I cannot write that function.", "python")
    assert not score.passed
    assert "no python code" in score.detail["message"]


def test_a_block_cut_off_by_max_tokens_is_parsed_to_the_end_and_records_the_finish_reason() -> None:
    score = _score("```python\ndef f(x):\n    return [x,", "python", finish_reason="length")
    assert not score.passed
    assert score.detail["finish_reason"] == "length"


def test_raw_json_answer_is_parsed_whole() -> None:
    assert _score('{"ok": true, "items": [1, 2, 3]}', "json", extract="raw").passed
    broken = _score('{"ok": true, "items": [1, 2, 3}', "json", extract="raw")
    assert not broken.passed
    assert broken.detail["column"] == 31


def test_raw_json_wrapped_in_a_single_fence_is_still_parsed() -> None:
    assert _score('```json\n{"ok": true}\n```', "json", extract="raw").passed


def test_raw_json_with_prose_around_it_fails() -> None:
    assert not _score('Sure! {"ok": true}', "json", extract="raw").passed


def test_corrupted_thai_token_inside_javascript_is_a_syntax_error() -> None:
    score = _score(_fence("javascript", "const total = items.reduce((a, b) => a + b, 0) สวัสดี;"), "javascript")
    assert not score.passed


def test_python_invalid_escape_warning_is_not_an_error() -> None:
    assert _score(_fence("python", 'pattern = "\\d+"'), "python").passed


def test_extract_blocks_accepts_tildes_aliases_and_info_attributes() -> None:
    text = "~~~ py title=example\nx = 1\n~~~\n```js\nlet y;\n```\n```Python3 linenums\nz = 2\n```"
    assert [b.code for b in extract_blocks(text, "python")] == ["x = 1\n", "z = 2\n"]
    assert [b.line for b in extract_blocks(text, "python")] == [2, 8]
