"""Every strategy, registered once (importing this package registers the whole catalogue).

Ask the registry, not the modules: :data:`STRATEGIES` (name -> :class:`Strategy`),
:data:`PARAMS` (param -> :class:`Param`), :func:`check_value`, :func:`active_hooks`,
:func:`inference_model`. A new remedy is a new module here, imported below.

Importing the catalogue imports no torch (validating a space must not wait seconds for it): a
strategy's hooks import torch in their bodies, and its ``nn.Module`` wrappers live in
:mod:`search.models` (docs/dev/layers.md, "Registries without torch"; tests/test_torch_free.py).
"""

from search.strategies.base import (
    GROUPS, NO_OFF, OWNER, PARAMS, STRATEGIES, Advice, Param, Strategy, TrainHooks, TrialContext, active_hooks,
    check_value, inference_model, input_channels, owner, register, unregister,
)

# Registration order is the order params are listed in (errors, `strategy-search strategies`).
from search.strategies import optimization  # noqa: E402,F401
from search.strategies import input  # noqa: E402,F401  (the module; shadows the builtin only here)
from search.strategies import architecture  # noqa: E402,F401
from search.strategies import drop_path  # noqa: E402,F401
from search.strategies import mixing  # noqa: E402,F401
from search.strategies import imbalance  # noqa: E402,F401
from search.strategies import policy  # noqa: E402,F401
from search.strategies import ema  # noqa: E402,F401
from search.strategies import tta  # noqa: E402,F401
from search.strategies import best_epoch  # noqa: E402,F401
from search.strategies import compile  # noqa: E402,F401  (the module; shadows the builtin only here)

__all__ = [
    "GROUPS", "NO_OFF", "OWNER", "PARAMS", "STRATEGIES", "Advice", "Param", "Strategy", "TrainHooks", "TrialContext",
    "active_hooks", "check_value", "inference_model", "input_channels", "owner", "register", "unregister",
]
