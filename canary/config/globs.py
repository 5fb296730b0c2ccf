"""Selections by glob: ``--cells``, ``--probes``, deploy cell selections and a target's ``probes``.

One rule for all of them, so a selection means the same wherever it is written:

1. Patterns are comma-separated (a list of strings is the same as their comma-joined text);
   whitespace around each is trimmed and empty items are ignored.
2. Each pattern is an ``fnmatch`` glob, matched case-sensitively (``fnmatchcase``): ``*``,
   ``?``, ``[seq]``.
3. A pattern starting with ``!`` is an exclusion. A name is selected when it matches at least
   one inclusion and no exclusion; with no inclusions at all (only exclusions, or nothing)
   selection starts from every name.

``"m/p/*,!m/p/b"`` selects every ``m/p`` cell but ``m/p/b``; ``"!m/p/b"`` selects every cell
but ``m/p/b``. A thing known by several names (a probe: its id and its set) matches a pattern
when any of its names does. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

Patterns = str | Iterable[str] | None


@dataclass(frozen=True)
class Selection:
    """Parsed patterns: globs to include and globs to exclude (without their ``!``)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: Patterns) -> Selection:
        """Split comma-separated patterns (a string or several) into inclusions and exclusions."""
        if patterns is None:
            return cls()
        texts = [patterns] if isinstance(patterns, str) else list(patterns)
        items = [item.strip() for text in texts for item in text.split(",")]
        include = tuple(i for i in items if i and not i.startswith("!"))
        exclude = tuple(e for e in (i[1:].strip() for i in items if i.startswith("!")) if e)
        return cls(include, exclude)

    @property
    def everything(self) -> bool:
        """Whether the selection restricts nothing (no patterns at all)."""
        return not self.include and not self.exclude

    def matches(self, *names: str) -> bool:
        """Whether a thing known by ``names`` is selected."""
        included = not self.include or any(fnmatchcase(n, g) for n in names for g in self.include)
        return included and not any(fnmatchcase(n, g) for n in names for g in self.exclude)

    def select(self, names: Iterable[str]) -> list[str]:
        """The selected names, in the order given."""
        return [n for n in names if self.matches(n)]

    def unmatched(self, names: Sequence[str]) -> list[str]:
        """Patterns (exclusions with their ``!``) that match none of ``names``: likely typos."""
        missing = [g for g in self.include if not any(fnmatchcase(n, g) for n in names)]
        return missing + [f"!{g}" for g in self.exclude if not any(fnmatchcase(n, g) for n in names)]


def select_names(patterns: Patterns, names: Iterable[str]) -> list[str]:
    """The names that ``patterns`` select, in the order given (all of them when there are none)."""
    return Selection.parse(patterns).select(names)
