"""``enqueue:`` in a space file: configurations run as the study's first trials, and whether a
value fits a param's spec (shared with warm starts).

``enqueue: [{lr: 0.001, batch_size: 64, augment: none}]`` -- each entry names searched params
(others are sampled as usual). The study enqueues them once, when it is created.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from search.core.spec import choice_label
from search.strategies import PARAMS, check_value


def param_fits(spec: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec`` (a :class:`search.space.parse.ParamSpec`), or None when it does."""
    if spec.kind == "fixed":
        return None if choice_label(value) == choice_label(spec.value) else f"fixed at {choice_label(spec.value)!r} here"
    if spec.kind == "choices":
        labels = [choice_label(c) for c in spec.choices]
        if choice_label(value) in labels:
            return None
        return "not one of the choices " + ", ".join(map(str, labels))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {value!r}"
    if spec.kind == "int" and not float(value).is_integer():
        return f"expected an integer, got {value!r}"
    tol = 1e-9 * max(1.0, abs(spec.high))
    if not spec.low - tol <= value <= spec.high + tol:
        return f"outside the range [{spec.low}, {spec.high}]"
    if spec.step:
        k = (value - spec.low) / spec.step
        if not math.isclose(k, round(k), abs_tol=1e-6):
            return f"not on the grid {spec.low} + k * {spec.step}"
    return None


def optuna_value(spec: Any, value: Any) -> Any:
    """``value`` as Optuna stores it for ``spec`` (a label for a categorical choice)."""
    if spec.kind == "choices":
        return choice_label(value)
    return int(value) if spec.kind == "int" else float(value)


def parse_enqueue(c: Any, raw: Any, params: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    """Validate ``enqueue:``: a list of mappings of searched params to values inside their specs."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail("enqueue", "expected a list of mappings param -> value (the first trials to run)")
    by_name = {p.name: p for p in params}
    searched = [p.name for p in params if p.kind != "fixed"]
    out = []
    for i, entry in enumerate(raw):
        key = f"enqueue[{i}]"
        if not isinstance(entry, Mapping) or not entry:
            raise c.fail(key, "expected a non-empty mapping param -> value")
        for name, value in entry.items():
            spec = by_name.get(name)
            if spec is None:
                allowed = ", ".join(searched) or "none (this space searches no param)"
                hint = "" if name in PARAMS else "unknown param; "
                raise c.fail(f"{key}.{name}", f"{hint}not a param of this space; searched params: {allowed}")
            problem = check_value(name, value) if spec.kind != "choices" else None
            problem = problem or param_fits(spec, value)
            if problem:
                raise c.fail(f"{key}.{name}", f"{value!r}: {problem}")
        out.append(dict(entry))
    return tuple(out)


def enqueue_params(space: Any, entry: Mapping[str, Any]) -> dict[str, Any]:
    """An ``enqueue:`` entry as Optuna's ``enqueue_trial`` params (searched params only, as stored)."""
    out = {}
    for name, value in entry.items():
        spec = space.param(name)
        if spec is not None and spec.kind != "fixed":
            out[name] = optuna_value(spec, value)
    return out
