"""Weight EMA (``ema_decay``): evaluate, keep and export an exponential moving average of the weights.

The average follows timm's :class:`~timm.utils.ModelEmaV3` exactly: every floating-point entry
of the state dict (parameters and BatchNorm running statistics) is averaged, integer buffers
(``num_batches_tracked``) are copied. Its warm-up is on: the decay used at step ``t`` is
``min(ema_decay, 1 - (1 + t)^-3/4)`` (0 at the first step), so a short trial averages its recent
steps instead of carrying its random initial weights. The average has the model's own state-dict
keys, so checkpoints and exports hold it like any model.

The update is two fused ops per step (``torch._foreach_lerp_`` over the floating-point entries,
``torch._foreach_copy_`` over the integer ones) on tensor lists paired once at the start. timm's
own update rebuilds both state dicts every step, which detaches every tensor again: on a GPU
step of ~2 ms those extra ops cost more than the average itself.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import Tensor, nn

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


class ForeachEMA:
    """The moving average of ``model``'s state dict, updated with fused (foreach) ops.

    ``module`` is a copy of the model (in eval mode, as timm's) holding the average.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_power: float = WARMUP_POWER) -> None:
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay
        self.warmup_power = warmup_power
        self.pair(model)

    def pair(self, model: nn.Module) -> None:
        """Pair the average's tensors with ``model``'s, by state-dict key (the tensors themselves,
        not detached copies: they are updated in place by the optimizer and BatchNorm)."""
        mine = self.module.state_dict(keep_vars=True)
        theirs = model.state_dict(keep_vars=True)
        if list(mine) != list(theirs):
            raise ValueError("the EMA copy and the model have different state-dict keys")
        self._float: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._other: tuple[list[Tensor], list[Tensor]] = ([], [])
        for key, ema_v in mine.items():
            group = self._float if ema_v.is_floating_point() else self._other
            group[0].append(ema_v.detach())
            group[1].append(theirs[key].detach())

    def decay_at(self, step: int) -> float:
        """timm's warmed-up decay (``ModelEmaV3.get_decay`` with ``use_warmup``): 0 at step 1."""
        t = max(0, step - 1)
        if t <= 0:
            return 0.0
        return max(min(1 - (1 + t) ** -self.warmup_power, self.decay), 0.0)

    def update(self, step: int) -> None:
        import torch  # (here: the registry is read without torch; a cached module lookup per step)

        weight = 1.0 - self.decay_at(step)
        with torch.no_grad():
            if self._float[0]:
                torch._foreach_lerp_(self._float[0], self._float[1], weight)
            if self._other[0]:
                torch._foreach_copy_(self._other[0], self._other[1])


class WeightEMA(TrainHooks):
    """Keeps a :class:`ForeachEMA` of the model and hands it to evaluation."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: ForeachEMA | None = None

    def start(self, model: nn.Module) -> None:
        # A copy on the model's device: the average is evaluated every epoch.
        self.ema = ForeachEMA(model, self.decay)

    def after_step(self, model: nn.Module, step: int) -> None:
        assert self.ema is not None, "start() builds the average"
        self.ema.update(step)

    def eval_model(self, model: nn.Module) -> nn.Module:
        # The averaged copy itself: same keys as the model.
        return model if self.ema is None else self.ema.module


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return WeightEMA(config.ema_decay) if config.ema_decay > 0 else None


register(Strategy(
    "ema_decay", Param(float, 0.0, f"decay of the weights' moving average (0: off; else {LOW} to {HIGH}, "
                       "e.g. 0.999)", low=0.0, high=HIGH, check=_check),
    "regularization", f"weight EMA (decay 0 or {LOW} to {HIGH}, e.g. 0.999): evaluate, keep and export a moving "
    "average of the weights (timm ModelEmaV3's, warmed up; fused updates)",
    off=0.0,
    advice=(Advice(("overfitting", "unstable"), {"choices": [0.0, 0.99, 0.999]},
                   "a moving average of the weights smooths noisy late training and often generalizes better"),),
    hooks=_hooks,
))
