"""Read the top rows of an 8-bit RGB/RGBA PNG (what Chromium's --screenshot writes) with zlib.

Pillow is not a dependency; this covers the one format the browser test needs: non-interlaced,
8 bits per channel, colour type 2 (RGB) or 6 (RGBA), all five row filters.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

Pixel = tuple[int, int, int]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path, max_rows: int | None = None) -> tuple[int, int, list[list[Pixel]]]:
    """(width, height, rows of RGB pixels), decoding only the first ``max_rows`` rows if given."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    rows: list[list[Pixel]] = []
    previous = bytearray(stride)
    for y in range(min(height, max_rows or height)):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((x + p) & 0xFF for x, p in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], up_left)) & 0xFF
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp)])
        previous = line
    return width, height, rows


def hex_rgb(colour: str) -> Pixel:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def coloured_boxes(
    rows: list[list[Pixel]], colours: dict[str, Pixel], min_side: int, stride: int = 2
) -> list[tuple[str, int, int, int, int]]:
    """Solid boxes of the given colours: (name, left, top, right, bottom) in pixels.

    Connected areas of one exact colour, sampled every ``stride`` pixels (text inside a box does
    not split it; the gap between two table cells does); areas narrower or lower than
    ``min_side`` (text badges) are left out.
    """
    by_rgb = {rgb: name for name, rgb in colours.items()}
    grid = [[by_rgb.get(row[x]) for x in range(0, len(row), stride)] for row in rows[::stride]]
    seen = [[False] * len(line) for line in grid]
    boxes: list[tuple[str, int, int, int, int]] = []
    for y0, line in enumerate(grid):
        for x0, name in enumerate(line):
            if name is None or seen[y0][x0]:
                continue
            stack, xs, ys = [(x0, y0)], [], []
            seen[y0][x0] = True
            while stack:
                x, y = stack.pop()
                xs.append(x)
                ys.append(y)
                for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                    if 0 <= ny < len(grid) and 0 <= nx < len(grid[ny]) and not seen[ny][nx]:
                        if grid[ny][nx] == name:
                            seen[ny][nx] = True
                            stack.append((nx, ny))
            left, right, top, bottom = min(xs) * stride, max(xs) * stride, min(ys) * stride, max(ys) * stride
            if right - left >= min_side and bottom - top >= min_side:
                boxes.append((name, left, top, right, bottom))
    return boxes


def differing_fraction(
    a: list[list[Pixel]], b: list[list[Pixel]], channel_tolerance: int = 40, stride: int = 2
) -> float:
    """The fraction of pixels where any channel differs by more than ``channel_tolerance``.

    Sampled every ``stride`` pixels each way. Images of different sizes differ everywhere (1.0).
    Anti-aliased glyph edges move by a few levels between font builds; a layout change moves
    whole blocks, which this counts.
    """
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        return 1.0
    total = differing = 0
    for row_a, row_b in zip(a[::stride], b[::stride], strict=True):
        for pa, pb in zip(row_a[::stride], row_b[::stride], strict=True):
            total += 1
            if (
                pa != pb
                and max(abs(pa[0] - pb[0]), abs(pa[1] - pb[1]), abs(pa[2] - pb[2])) > channel_tolerance
            ):
                differing += 1
    return differing / total if total else 0.0
