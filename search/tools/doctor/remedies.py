"""The values the doctor may propose for a strategy, read from where the strategies are registered.

:func:`strategy_values` is the one place the doctor learns which color spaces, augmentation sets,
aspect modes, schedules and norms exist (the strategy registry, :mod:`search.strategies`); the
rest of the doctor picks among them (:func:`pick`), so a value the trainer no longer knows is never
written into a space file. :func:`advised` lists the remedies whose registered doctor advice names
a finding, so a new strategy is proposed without touching the doctor.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from search.core.config import TrialConfig
from search.strategies import PARAMS, STRATEGIES, Advice

log = logging.getLogger(__name__)


def strategy_values(param: str) -> tuple[Any, ...]:
    """Every registered value of ``param``, in registration order (from the strategy registry)."""
    spec = PARAMS.get(param)
    if spec is not None and spec.kind is bool:
        return (False, True)
    allowed = spec.allowed() if spec is not None else None
    if allowed is None:
        raise KeyError(f"no registry lists the values of {param!r}")
    return tuple(allowed)


def advised(kinds: Iterable[str], baseline: TrialConfig | None = None) -> list[tuple[str, Advice]]:
    """(param, advice) of every registered strategy whose doctor advice names one of the finding
    ``kinds``, in registration order; strategies that mean nothing for ``baseline`` are left out
    (stochastic depth without residual blocks or a backbone)."""
    kinds = set(kinds)
    out = []
    for name in STRATEGIES:
        strategy = STRATEGIES.get(name)
        if baseline is not None and strategy.requires is not None and not strategy.requires(baseline):
            continue
        for advice in strategy.advice:
            if kinds & set(advice.findings):
                out.append((name, advice))
                break
    return out


def pick(param: str, wanted: Iterable[Any] | None = None, *, exclude: Iterable[Any] = ()) -> list[Any]:
    """``wanted`` values of ``param`` (default: all registered) that are registered, minus ``exclude``."""
    known = strategy_values(param)
    skip = set(exclude)
    values = list(known if wanted is None else wanted)
    missing = [v for v in values if v not in known]
    if missing:
        log.debug("doctor: %s values %s are not registered; left out", param, missing)
    return [v for v in values if v in known and v not in skip]
