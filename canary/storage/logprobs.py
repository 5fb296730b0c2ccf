"""Token logprobs as stored in ``runs.token_logprobs``: compact JSON, zlib-compressed.

A run's logprobs (each token, its logprob and its top alternatives) were a JSONB array: JSONB
keeps every number and string with its own header and PostgreSQL compresses a value only past
about 2 kB, so a typical run's array cost more than its output text. Here the same list is
written as JSON without spaces and compressed with zlib, which shrinks it about fourfold
(``bench/scale.py`` measures bytes per run). Rows that migration 0007 moved over keep their
JSON uncompressed (SQL cannot compress), and :func:`decode` reads both.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

LEVEL = 6  # zlib's default: level 9 saves ~2 % more for twice the time


def encode(rows: list[Any] | None) -> bytes | None:
    """``[[token, logprob, [[alternative, logprob], ...]], ...]`` as compressed JSON (``None`` stays)."""
    if rows is None:
        return None
    return zlib.compress(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode(), LEVEL)


def decode(data: bytes | None) -> list[Any] | None:
    """The list :func:`encode` was given; plain JSON (migrated rows) is read as it is."""
    if data is None:
        return None
    raw = bytes(data)
    text = raw if raw[:1] == b"[" else zlib.decompress(raw)
    value = json.loads(text)
    assert isinstance(value, list)
    return value
