"""Weight EMA (``ema_decay``): evaluate, keep and export an exponential moving average of the weights.

timm's :class:`~timm.utils.ModelEmaV3` keeps the average: every floating-point entry of the
state dict (parameters and BatchNorm running statistics) is averaged, integer buffers
(``num_batches_tracked``) are copied. Its warm-up is on: the decay used at step ``t`` is
``min(ema_decay, 1 - (1 + t)^-3/4)`` (0 at the first step), so a short trial averages its recent
steps instead of carrying its random initial weights. The average has the model's own state-dict
keys, so checkpoints and exports hold it like any model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

LOW, HIGH = 0.5, 0.99999
WARMUP_POWER = 0.75  # timm's advice for runs shorter than about a million steps


def _check(value: Any, extra: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"ema_decay must be a number, got {value!r}"
    if value != 0 and not LOW <= value <= HIGH:
        # 0.001 is usually 1 - decay (BatchNorm's momentum convention): say which one is meant.
        return (f"ema_decay must be 0 (off) or in [{LOW}, {HIGH}], got {value!r} "
                "(the weight the average keeps each step, e.g. 0.999, not 1 - decay)")
    return None


class WeightEMA(TrainHooks):
    """Keeps a :class:`ModelEmaV3` of the model and hands it to evaluation."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: Any = None  # timm.utils.ModelEmaV3 once the model exists

    def start(self, model: nn.Module) -> None:
        # A copy on the model's device (device=None): the average is evaluated every epoch.
        # timm is imported here, not at module level: it costs ~2 s, which trials without EMA need not pay.
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=self.decay, use_warmup=True, warmup_power=WARMUP_POWER)

    def after_step(self, model: nn.Module, step: int) -> None:
        assert self.ema is not None, "start() builds the average"
        self.ema.update(model, step=step)

    def eval_model(self, model: nn.Module) -> nn.Module:
        # The averaged copy itself (not the ModelEmaV3 wrapper): same keys as the model.
        return model if self.ema is None else self.ema.module


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return WeightEMA(config.ema_decay) if config.ema_decay > 0 else None


register(Strategy(
    "ema_decay", Param(float, 0.0, f"decay of the weights' moving average (0: off; else {LOW} to {HIGH}, "
                       "e.g. 0.999)", low=0.0, high=HIGH, check=_check),
    "regularization", f"weight EMA (decay 0 or {LOW} to {HIGH}, e.g. 0.999): evaluate, keep and export a moving "
    "average of the weights (timm ModelEmaV3, warmed up)",
    off=0.0,
    advice=(Advice(("overfitting", "unstable"), {"choices": [0.0, 0.99, 0.999]},
                   "a moving average of the weights smooths noisy late training and often generalizes better"),),
    hooks=_hooks,
))
