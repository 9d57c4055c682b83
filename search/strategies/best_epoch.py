"""Keep the best validation epoch (``restore_best_epoch``): early stopping done right.

A trial that peaks at epoch 16 and drifts down by epoch 23 is scored, kept and exported at epoch
23 unless told otherwise. With ``restore_best_epoch: true`` the trainer keeps a copy of the
evaluated weights (the EMA average with ``ema_decay``) of the best epoch so far, judged by the
first objective on the validation split (by validation loss when that objective is a cost such as
latency, unknown while training), and puts them back at the end: the trial's value, its test
metrics, checkpoint and export are that epoch's. The trial records which epoch it kept
(``restored_epoch``). Choosing an epoch on the validation split makes its score a little
optimistic, like any selection on it; the test split stays untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import nn


class BestEpoch(TrainHooks):
    """Keeps the state of the best-scoring epoch (one copy of the weights, on the model's device)."""

    def __init__(self) -> None:
        self.score: float | None = None
        self.epoch: int | None = None
        self.metrics: Any = None
        self.state: dict[str, Any] | None = None

    def epoch_end(self, model: nn.Module, epoch: int, score: float, metrics: Any) -> None:
        if self.score is not None and not score > self.score:  # ties keep the earlier epoch
            return
        self.score, self.epoch, self.metrics = score, epoch, metrics
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> tuple[int, Any] | None:
        if self.state is None or self.epoch is None:
            return None
        model.load_state_dict(self.state)
        return self.epoch, self.metrics


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return BestEpoch() if config.restore_best_epoch else None


register(Strategy(
    "restore_best_epoch", Param(bool, False, "keep the weights of the best validation epoch instead of the last"),
    "regularization", "early stopping done right: train all epochs, then keep (score, test, export) the weights "
    "of the best validation epoch instead of the last",
    off=False,
    advice=(Advice(("overfitting", "unstable"), {"choices": [False, True]},
                   "validation peaks before the last epoch (or jumps about): keep the best epoch's weights"),),
    hooks=_hooks,
))
