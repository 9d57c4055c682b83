"""Stochastic depth (``drop_path``): randomly skip residual branches while training.

timm backbones take it as ``drop_path_rate``; the built-in CNN applies it to its residual blocks
(so it means something there only with ``residual: true``).
"""

from __future__ import annotations

from typing import Any

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register


class _DropPath(TrainHooks):
    def __init__(self, rate: float) -> None:
        self.rate = rate

    def model_kwargs(self) -> dict[str, Any]:
        return {"drop_path_rate": self.rate}


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return _DropPath(config.drop_path) if config.drop_path > 0 else None


register(Strategy(
    "drop_path", Param(float, 0.0, "stochastic depth rate of the deepest block (0: off)", low=0.0, high=0.9),
    "regularization", "stochastic depth: residual branches dropped at random while training",
    off=0.0,
    requires=lambda config: config.backbone != "none" or config.residual,
    advice=(Advice(("overfitting",), {"float": [0.0, 0.2]},
                   "overfitting: stochastic depth regularizes residual networks (needs residual or a backbone)"),),
    hooks=_hooks,
))
