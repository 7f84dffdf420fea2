"""Charts drawn on the server as SVG path data, and the A/B statistics behind them.

Sparklines and line charts are a few hundred bytes of SVG each: no charting library is
shipped for them (docs/adr/0018-console-server-rendered-with-htmx.md). Colours and line
widths come from CSS classes (static/console.css), as the console's CSP forbids inline
styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ("polyline", "wilson_interval")


def polyline(values: Sequence[float], width: float, height: float, top: float = 0) -> str:
    """The `points` of an SVG polyline for `values` over a `width` x `height` box (y grows
    down; the largest value, or `top` if larger, touches the top edge)."""
    if not values:
        return ""
    peak = max(max(values), top) or 1.0
    low = min(0.0, min(values))
    span = (peak - low) or 1.0
    step = width / (len(values) - 1) if len(values) > 1 else 0.0
    return " ".join(
        f"{i * step:.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values)
    )


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal
    approximation it stays inside [0, 1] and behaves with few clicks."""
    if trials <= 0:
        return (0.0, 0.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - margin), min(1.0, centre + margin))
