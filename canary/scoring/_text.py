"""Small text helpers shared by scorers: JSON-safe snippets for ``Score.detail``.

``detail`` lands in a PostgreSQL JSONB column, which rejects NUL characters and lone UTF-16
surrogates (both can appear in a corrupted completion), so every string a scorer puts in
``detail`` goes through :func:`clean`.
"""

from __future__ import annotations

import regex

MAX_SPANS = 5
"""How many offending spans a scorer lists in ``detail``; counts always cover all of them."""

_UNSAFE = regex.compile(r"[\x00\p{Cs}]")


def clean(text: str) -> str:
    """``text`` with NULs and lone surrogates replaced by U+FFFD, so it is valid JSONB."""
    return str(_UNSAFE.sub("\ufffd", text))


def snippet(text: str, start: int, end: int | None = None, width: int = 24) -> str:
    """The characters around ``text[start:end]``, with ``…`` where the text was cut."""
    end = start if end is None else end
    lo = max(0, start - width)
    hi = min(len(text), end + width)
    return clean(("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else ""))


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with ``…``), JSON-safe."""
    return clean(text if len(text) <= limit else text[: limit - 1] + "…")
