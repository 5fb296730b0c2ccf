"""A failure-rate sparkline as inline SVG: hourly rates against the baseline's band. Pure.

Each point is one hour's failure rate; the grey band is where that hour's rate falls if nothing
changed: the baseline rate ``p0`` ± ``Z`` binomial standard errors for the hour's own count, the
limit the status page's health rule calls a warning (so a point above the band is what turns a
cell orange or red). Hours outside the band are drawn as red dots, and the last 15 minutes (the
window the status is judged on) as a final dot at the right edge. No script, no external
resource: the browser draws it from the page alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape

Z = 2.5  # the health rule's warning threshold (canary.service.health)
WIDTH, HEIGHT, PAD = 240, 36, 3
MIN_SCALE = 0.02  # the y axis spans at least 0–2 %, so a 0.1 % blip does not fill the box


@dataclass(frozen=True)
class Point:
    """One hour: scored runs and failures (``runs == 0``: no data that hour)."""

    runs: int
    failures: int


def band(p0: float, runs: int, z: float = Z) -> tuple[float, float]:
    """The expected range of an hour's rate with ``runs`` scores when the true rate is ``p0``."""
    if runs <= 0:
        return p0, p0
    half = z * math.sqrt(max(p0 * (1.0 - p0), 0.0) / runs)
    return max(0.0, p0 - half), min(1.0, p0 + half)


@lru_cache(maxsize=8)
def _xs(steps: int) -> tuple[int, ...]:
    """x of each point's centre (whole pixels: shorter markup, and 1,000 cells render fast)."""
    dx = (WIDTH - 2 * PAD - 8) / max(steps, 1)  # the last 8 px hold the recent dot
    return tuple(round(PAD + dx * (i + 0.5)) for i in range(steps))


def sparkline_svg(
    points: Sequence[Point],
    p0: float,
    recent_rate: float | None,
    label: str,
    *,
    recent_alarm: bool = False,
    floor: float = 0.005,
) -> str:
    """The SVG for ``points`` (oldest first) against baseline ``p0``; ``label`` titles it.

    ``recent_rate`` is the last 15 minutes' rate, drawn red when ``recent_alarm`` (the health
    rule judged it a warning or worse). ``floor`` is the smallest baseline the band is built on
    (the health rule floors ``p0`` the same way, so a metric that never failed still gets a
    band a few failures wide).
    """
    p_band = min(max(p0, floor), 1.0 - floor)
    xs = _xs(len(points))
    # (x, rate, band low, band high) of the hours with data
    hours = [
        (x, p.failures / p.runs, *band(p_band, p.runs)) for x, p in zip(xs, points, strict=True) if p.runs
    ]
    top = max([MIN_SCALE, recent_rate or 0.0, *(h[1] for h in hours), *(h[3] for h in hours)])
    scale = (HEIGHT - 2 * PAD) / min(1.0, top * 1.1)
    base = HEIGHT - PAD

    def y(rate: float) -> int:
        return round(base - scale * rate)

    label = escape(label)
    parts = [
        f'<svg class="spark" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{label}"><title>{label}</title>'
        f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" class="axis"/>'
    ]
    if hours:
        upper = " ".join(f"{x},{y(high)}" for x, _, _, high in hours)
        lower = " ".join(f"{x},{y(low)}" for x, _, low, _ in reversed(hours))
        parts.append(f'<polygon points="{upper} {lower}" class="band"/>')
    if len(hours) > 1:
        parts.append(f'<polyline points="{" ".join(f"{x},{y(r)}" for x, r, _, _ in hours)}" class="rate"/>')
    parts.extend(f'<circle cx="{x}" cy="{y(r)}" r="2.2" class="out"/>' for x, r, _, high in hours if r > high)
    if recent_rate is not None:
        parts.append(
            f'<circle cx="{WIDTH - PAD - 3}" cy="{y(recent_rate)}" r="3"'
            f' class="{"now out" if recent_alarm else "now"}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
