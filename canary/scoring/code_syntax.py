"""``code_syntax``: the code the probe asked for parses in that language.

Code is taken from fenced blocks tagged with the probe's language (or untagged), or from the
whole answer when the probe says ``code_extract = "raw"``. Blocks tagged with another language
are left alone: an answer to a Python probe may show a shell command, and a mistake there is
not what the probe measures. Python is parsed with :mod:`ast`, JSON with :mod:`json`, and
JavaScript, SQL and Bash with the tree-sitter grammars installed as packages (they work
offline). The first error's line and column, counted from 1 inside the block, go in ``detail``.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import tree_sitter
import tree_sitter_bash
import tree_sitter_javascript
import tree_sitter_sql

from canary.probing.catalog import Probe
from canary.probing.completion import Completion
from canary.scoring._text import clip
from canary.scoring.base import Score, ScoringContext

ALIASES: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3", "py3"}),
    "javascript": frozenset({"javascript", "js", "node", "nodejs", "mjs", "cjs", "jsx", "ecmascript"}),
    "sql": frozenset({"sql", "postgresql", "postgres", "psql", "pgsql", "mysql", "sqlite", "plsql"}),
    "bash": frozenset({"bash", "sh", "shell", "zsh", "shellscript"}),
    "json": frozenset({"json", "jsonc", "json5"}),
}
"""Fence info strings accepted for each ``code_language`` a probe may name."""

# An opening fence of three or more backticks or tildes, its info string, then the body up to
# a closing fence of the same character or, for an answer cut off mid-block, the end of text.
# (The stdlib engine: twice as fast as ``regex`` on this pattern, which needs no Unicode tables.)
_FENCE = re.compile(
    r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)(?:^[ \t]{0,3}(?P=fence)[`~]*[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Block:
    code: str
    line: int  # line in the completion where the code starts, counted from 1


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    line: int
    column: int
    message: str


def extract_blocks(text: str, language: str) -> list[Block]:
    """Fenced blocks tagged with ``language`` (or one of its aliases) or not tagged at all."""
    accepted = ALIASES.get(language, frozenset({language}))
    blocks = []
    for match in _FENCE.finditer(text):
        words = match.group("info").strip().lower().split()
        tag = words[0].lstrip("{.") if words else ""
        if tag == "" or tag in accepted:
            line = text.count("\n", 0, match.start("body")) + 1
            blocks.append(Block(match.group("body"), line))
    return blocks


def _check_python(code: str) -> SyntaxProblem | None:
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like are warnings, not syntax errors.
            warnings.simplefilter("ignore")
            ast.parse(code)
    except SyntaxError as exc:
        return SyntaxProblem(exc.lineno or 1, exc.offset or 1, exc.msg)
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return SyntaxProblem(1, 1, f"{type(exc).__name__}: {exc}"[:200])
    return None


def _check_json(code: str) -> SyntaxProblem | None:
    try:
        json.loads(code)
    except json.JSONDecodeError as exc:
        return SyntaxProblem(exc.lineno, exc.colno, exc.msg)
    except RecursionError:
        return SyntaxProblem(1, 1, "nesting too deep")
    return None


@cache
def _parser(language: str) -> tree_sitter.Parser:
    modules = {"javascript": tree_sitter_javascript, "sql": tree_sitter_sql, "bash": tree_sitter_bash}
    return tree_sitter.Parser(tree_sitter.Language(modules[language].language()))


def _first_error_node(root: tree_sitter.Node) -> tree_sitter.Node:
    """The first ERROR or MISSING node in document order (``has_error`` marks its ancestors)."""
    node = root
    while not (node.is_error or node.is_missing):
        for child in node.children:
            if child.has_error or child.is_missing:
                node = child
                break
        else:
            return node
    return node


def _tree_sitter_checker(language: str) -> Callable[[str], SyntaxProblem | None]:
    def check(code: str) -> SyntaxProblem | None:
        source = code.encode("utf-8", "surrogatepass")
        root = _parser(language).parse(source).root_node
        if not root.has_error:
            return None
        node = _first_error_node(root)
        row, byte_col = node.start_point
        line_start = source.rfind(b"\n", 0, node.start_byte) + 1
        column = len(source[line_start : line_start + byte_col].decode("utf-8", "replace")) + 1
        if node.is_missing:
            message = f"missing {node.type}"
        else:
            message = f"unexpected {clip(node.text.decode('utf-8', 'replace') if node.text else '', 30)!r}"
        return SyntaxProblem(row + 1, column, message)

    return check


CHECKERS: dict[str, Callable[[str], SyntaxProblem | None]] = {
    "python": _check_python,
    "json": _check_json,
    "javascript": _tree_sitter_checker("javascript"),
    "sql": _tree_sitter_checker("sql"),
    "bash": _tree_sitter_checker("bash"),
}


class CodeSyntaxScorer:
    name = "code_syntax"

    def score(self, probe: Probe, completion: Completion, context: ScoringContext) -> list[Score]:
        language = probe.spec.code_language
        if language is None:
            return []
        text = completion.text
        if probe.spec.code_extract == "raw":
            # A raw answer wrapped in a single fence is still the answer the probe asked for.
            fenced = extract_blocks(text, language)
            stripped = text.strip()
            if len(fenced) == 1 and stripped.startswith(("```", "~~~")):
                blocks = fenced
            else:
                blocks = [Block(stripped, 1)]
        else:
            blocks = extract_blocks(text, language)
        base: dict[str, Any] = {"language": language, "blocks": len(blocks)}
        if not blocks or not any(b.code.strip() for b in blocks):
            return [Score(self.name, False, 0.0, {**base, "message": f"no {language} code found"})]
        for index, block in enumerate(blocks):
            problem = CHECKERS[language](block.code)
            if problem is not None:
                lines = block.code.splitlines() or [""]
                offending = lines[min(problem.line, len(lines)) - 1]
                detail = {
                    **base,
                    "block": index,
                    "line": problem.line,
                    "column": problem.column,
                    "answer_line": block.line + problem.line - 1,
                    "message": clip(problem.message, 120),
                    "snippet": clip(offending, 80),
                    "finish_reason": completion.finish_reason,
                }
                return [Score(self.name, False, 0.0, detail)]
        return [Score(self.name, True, 1.0, base)]
