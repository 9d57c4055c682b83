"""Numbers for people: three significant digits, durations in s / min / h."""

from __future__ import annotations

import math
from typing import Any

SIGNIFICANT = 3


def readable(value: Any, digits: int = SIGNIFICANT) -> str:
    """A float with ``digits`` significant digits (``0.000253``, ``0.931``, ``1.2e+05``); anything else as str."""
    if isinstance(value, float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return str(value)
        rounded = float(f"{value:.{digits}g}")
        if 10 ** digits <= abs(rounded) < 1e9:  # 1,070 rather than 1.07e+03
            return f"{rounded:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``2.3 h``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
