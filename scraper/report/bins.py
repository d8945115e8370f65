"""Histogram bins with round edges (1, 2, 2.5 or 5 times a power of ten), so a reader can say which bar a value
falls in: each bar holds the values v with lo <= v < hi."""

from __future__ import annotations

import bisect
import math
from typing import Optional

STEPS = (1.0, 2.0, 2.5, 5.0)


def round_width(span: float, bars: int) -> float:
    """The smallest round width that covers `span` in at most `bars` bars."""
    rough = span / bars if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(rough))
    return next((step * power for step in STEPS if step * power >= rough), 10.0 * power)


def edges(low: float, high: float, bars: int, floor: Optional[float] = None) -> list[float]:
    """Round edges from at or below `low` (not below `floor`) to above `high`: the last bar ends past the maximum,
    so every bar is half-open."""
    width = round_width(high - low, bars)
    start = math.floor(low / width) * width
    if floor is not None:
        start = max(start, floor)
    count = math.floor((high - start) / width) + 1
    # rounded, so that 0.1 * 3 is written and compared as 0.3; rounding must not leave `low` or `high` outside
    cuts = [round(start + i * width, 9) for i in range(count + 1)]
    while cuts[0] > low:
        cuts.insert(0, round(cuts[0] - width, 9))
    while cuts[-1] <= high:
        cuts.append(round(cuts[-1] + width, 9))
    return cuts


def histogram(values: list[float], bars: int = 12, floor: Optional[float] = None) -> Optional[dict]:
    """{"edges": [...], "counts": [...], "values": n} of the finite values, None when there are none."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not finite:
        return None
    cuts = edges(min(finite), max(finite), bars, floor)
    counts = [0] * (len(cuts) - 1)
    for value in finite:
        counts[bisect.bisect_right(cuts, value) - 1] += 1
    return {"edges": cuts, "counts": counts, "values": len(finite)}
