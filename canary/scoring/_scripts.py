"""Unicode script names for characters, from the ``regex`` module's own Unicode tables.

The ``regex`` module ships the Unicode Character Database's Script property (it is what
``\\p{Script=Thai}`` matches against); we ask it rather than keeping a hand-written table of
code-point ranges, so a Unicode upgrade of ``regex`` is picked up without a code change.
"""

from __future__ import annotations

from functools import lru_cache

import regex
from regex import _regex_core  # the property table regex itself parses \p{...} with

ALWAYS_ALLOWED = ("Common", "Inherited")
"""Punctuation, digits, symbols, emoji and combining marks belong to every script."""


def _pretty(name: str) -> str:
    return name.title()


def _script_names() -> dict[int, str]:
    """Script id -> one readable name ("Thai", "Han", "Hangul"), preferring long names.

    The table maps every alias (``THAI``, ``HANI``, ``HAN``, ``QAAI``…) to the script's id; the
    four-letter ISO 15924 codes are the aliases we avoid when a longer name exists.
    """
    _, values = _regex_core.PROPERTIES["SCRIPT"]
    best: dict[int, str] = {}
    for alias, script_id in values.items():
        current = best.get(script_id)
        rank = (len(alias) != 4, len(alias))
        if current is None or rank > (len(current) != 4, len(current)):
            best[script_id] = alias
    return {script_id: _pretty(alias) for script_id, alias in best.items()}


_NAMES = _script_names()
# Most flagged characters in practice come from a handful of scripts; try those first.
_FIRST = ("Thai", "Han", "Cyrillic", "Hangul", "Hiragana", "Katakana", "Arabic", "Greek", "Latin")
_ORDER = [n for n in _FIRST if n in _NAMES.values()] + sorted(set(_NAMES.values()) - set(_FIRST))
_MATCHERS = [(name, regex.compile(rf"\p{{Script={name}}}")) for name in _ORDER]


@lru_cache(maxsize=4096)
def script_of(char: str) -> str:
    """The Unicode Script property value of one character ("Unknown" when unassigned)."""
    for name, matcher in _MATCHERS:
        if matcher.match(char):
            return name
    return "Unknown"


def is_script(name: str) -> bool:
    """Whether ``name`` is a Unicode script name or alias that ``regex`` understands."""
    try:
        regex.compile(rf"\p{{Script={name}}}")
    except regex.error:
        return False
    return True


@lru_cache(maxsize=256)
def disallowed_pattern(allowed: tuple[str, ...]) -> regex.Pattern[str]:
    """A pattern matching runs of characters outside ``allowed`` + Common + Inherited."""
    scripts = dict.fromkeys((*allowed, *ALWAYS_ALLOWED))
    classes = "".join(rf"\p{{Script={name}}}" for name in scripts)
    return regex.compile(rf"[^{classes}]+")
