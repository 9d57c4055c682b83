"""Optimisers and learning-rate schedules, registered by the names space files use."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from search.config import TrialConfig
from search.registry import Registry

OptimizerFactory = Callable[[list[dict[str, Any]], TrialConfig], Optimizer]
ScheduleFactory = Callable[[Optimizer, TrialConfig, int, int], LRScheduler]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ScheduleFactory] = Registry("schedule")


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                           nesterov=c.momentum > 0)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict[str, Any]], c: TrialConfig) -> Optimizer:
    # Classic L2 penalty (coupled weight decay), for comparison with AdamW's decoupled decay.
    return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)


def _with_warmup(shape: Callable[[float], float], warmup_steps: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total - warmup_steps)
        return shape(min(1.0, (step - warmup_steps) / span))

    return factor


@SCHEDULES.register("constant")
def _constant(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 1.0, c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("cosine")
def _cosine(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 0.5 * (1 + math.cos(math.pi * t)),
                                      c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("step")
def _step(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    # x0.1 at half and at three quarters of training.
    total = steps_per_epoch * epochs
    return LambdaLR(opt, _with_warmup(lambda t: 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01),
                                      c.warmup_epochs * steps_per_epoch, total))


@SCHEDULES.register("onecycle")
def _onecycle(opt: Optimizer, c: TrialConfig, steps_per_epoch: int, epochs: int) -> LRScheduler:
    max_lr = [g["lr"] for g in opt.param_groups]
    return OneCycleLR(opt, max_lr=max_lr, total_steps=max(2, steps_per_epoch * epochs))
