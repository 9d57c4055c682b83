"""The values the doctor may propose for a strategy, read from where the strategies are registered.

:func:`strategy_values` is the one place the doctor learns which colour spaces, augmentation sets,
aspect modes, schedules and norms exist; the rest of the doctor picks among them (:func:`pick`),
so a value the trainer no longer knows is never written into a space file.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from search.data.colour import COLOR_SPACES
from search.data.transforms import ASPECTS, AUGMENT_SETS
from search.models.cnn import NORMS
from search.train.optim import OPTIMIZERS, SCHEDULES

log = logging.getLogger(__name__)

_BOOLEAN = ("residual", "pretrained")


def strategy_values(param: str) -> tuple[Any, ...]:
    """Every registered value of ``param``, in registration order."""
    # Today's registries; to be answered by the strategy registry (issue 12) in one place.
    registries: dict[str, Any] = {
        "color": lambda: COLOR_SPACES.names(),
        "augment": lambda: list(AUGMENT_SETS),
        "aspect": lambda: list(ASPECTS),
        "schedule": lambda: SCHEDULES.names(),
        "optimizer": lambda: OPTIMIZERS.names(),
        "norm": lambda: NORMS.names(),
    }
    if param in _BOOLEAN:
        return (False, True)
    if param not in registries:
        raise KeyError(f"no registry lists the values of {param!r}")
    return tuple(registries[param]())


def pick(param: str, wanted: Iterable[Any] | None = None, *, exclude: Iterable[Any] = ()) -> list[Any]:
    """``wanted`` values of ``param`` (default: all registered) that are registered, minus ``exclude``."""
    known = strategy_values(param)
    skip = set(exclude)
    values = list(known if wanted is None else wanted)
    missing = [v for v in values if v not in known]
    if missing:
        log.debug("doctor: %s values %s are not registered; left out", param, missing)
    return [v for v in values if v in known and v not in skip]
