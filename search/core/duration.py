"""Durations as people write them: ``90`` or ``90s`` (seconds), ``15m``, ``1.5h``, ``1h30m``, ``2d``."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (a positive number of seconds, or text like ``15m``); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 900, 900s, 15m or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or _PART.sub("", text).strip():
                raise ValueError(f"expected a duration like 900, 900s, 15m or 1h30m, got {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 900, 900s, 15m or 1h30m, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive and finite, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``900`` -> ``15m``, ``5400`` -> ``1h30m``, ``75`` -> ``75s``: the shortest exact spelling."""
    s = int(round(seconds))
    if s % 60 or s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, rest = divmod(m, 60)
    return f"{h}h{rest}m" if rest else f"{h}h"
