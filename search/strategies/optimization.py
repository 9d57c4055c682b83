"""Optimization strategies: learning rate, optimizer, schedule, batch size, epochs, regularizers of the update.

Optimizers and schedules are registries of factories; the ``optimizer`` and ``schedule``
strategies take their allowed values from them, so a new optimizer is one registration here.
The factories import torch when they build (the registries are read without it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from search.core.config import TrialConfig
from search.core.registry import Registry
from search.strategies.base import Param, Strategy, register

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

OptimizerFactory = Callable[[list[dict[str, Any]], TrialConfig], "Optimizer"]
ScheduleFactory = Callable[["Optimizer", TrialConfig, int, int], "LRScheduler"]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ScheduleFactory] = Registry("schedule")


def fused_kernels(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"fused": True}`` when every parameter is on a GPU: the update is then one fused kernel
    per step instead of the foreach default's several launches per tensor group (a bare loop's).
    On the CPU the default implementation stays (its numbers are what the tests compare)."""
    params = [p for g in groups for p in g["params"]]
    return {"fused": True} if params and all(p.is_cuda and p.is_floating_point() for p in params) else {}


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    import torch

    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                           nesterov=c.momentum > 0, **fused_kernels(groups))


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    import torch

    return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay, **fused_kernels(groups))


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    # Classic L2 penalty (coupled weight decay), for comparison with AdamW's decoupled decay.
    import torch

    return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay, **fused_kernels(groups))


def _with_warmup(shape: Callable[[float], float], warmup_steps: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total - warmup_steps)
        return shape(min(1.0, (step - warmup_steps) / span))

    return factor


@SCHEDULES.register("constant")
def _constant(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import LambdaLR

    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 1.0, c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("cosine")
def _cosine(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import LambdaLR

    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 0.5 * (1 + math.cos(math.pi * t)),
                                      c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("step")
def _step(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    # x0.1 at half and at three quarters of training.
    from torch.optim.lr_scheduler import LambdaLR

    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01),
                                      c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("onecycle")
def _onecycle(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import OneCycleLR

    max_lr = [g["lr"] for g in opt.param_groups]
    return OneCycleLR(opt, max_lr=max_lr, total_steps=max(2, steps_per_epoch * epochs))


register(Strategy(
    "lr", Param(float, 1e-3, "learning rate", low=0.0, low_inclusive=False, high=10.0), "optimization",
    "learning-rate tuning: the first thing to search",
))
register(Strategy(
    "optimizer", Param(str, "adamw", "optimizer", choices=OPTIMIZERS.names), "optimization",
    "SGD with momentum, Adam (L2 penalty) or AdamW (decoupled weight decay)",
    options={"momentum": Param(float, 0.9, "SGD momentum", low=0.0, high=1.0)},
))
register(Strategy(
    "weight_decay", Param(float, 0.0, "weight decay", low=0.0, high=1.0), "regularization",
    "weight decay: pulls weights towards 0 against overfitting", off=0.0,
))
register(Strategy(
    "schedule", Param(str, "constant", "learning-rate schedule", choices=SCHEDULES.names), "optimization",
    "a decaying or one-cycle learning rate", off="constant",
))
register(Strategy(
    "warmup_epochs", Param(int, 0, "linear warm-up epochs", low=0, high=1000), "optimization",
    "linear learning-rate warm-up: steadies the first steps", off=0,
))
register(Strategy(
    "batch_size", Param(int, 64, "batch size", low=1, high=65536), "optimization",
    "batch size: gradient noise against speed",
))
register(Strategy(
    "epochs", Param(int, None, "epochs (at most budget.max_epochs; null: the budget's)", low=1, high=100000,
                    nullable=True),
    "optimization", "more epochs for a model still improving; fewer (early stopping) for one overfitting",
))
register(Strategy(
    "label_smoothing", Param(float, 0.0, "label smoothing", low=0.0, high=0.99), "regularization",
    "softer targets: less confident fits", off=0.0,
))
register(Strategy(
    "grad_clip", Param(float, 0.0, "gradient-norm clip (0: off)", low=0.0, high=1e6), "optimization",
    "clips exploding gradient norms", off=0.0,
))
register(Strategy(
    "seed", Param(int, None, "random seed (null: the space's seed + the trial number)", low=0, high=2**31 - 1,
                  nullable=True),
    "run", "the trial's random seed",
))
