"""Class imbalance (``imbalance``): an inverse-frequency weighted loss or a class-balanced sampler.

``weighted_loss`` weights each class's loss by 1 / its training images (mean weight 1 over the
classes that have images); ``balanced_sampler`` draws each epoch's training images with
replacement, each with probability proportional to 1 / its class's count, so every class is
drawn about equally often (same number of samples per epoch as a plain shuffle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import Generator, Tensor

IMBALANCE = ("none", "weighted_loss", "balanced_sampler")


def inverse_frequency(counts: Sequence[int]) -> Tensor:
    """Per-class loss weights 1 / count, scaled to mean 1 over the classes that have images.

    A class without training images gets weight 0: no target names it, and a weight of 1 / 0 would
    let label smoothing (which gives every class a share) swamp the loss.
    """
    import torch

    c = torch.as_tensor(list(counts), dtype=torch.float64)
    present = c > 0
    inv = torch.where(present, 1.0 / c.clamp(min=1.0), torch.zeros_like(c))
    if present.any():
        inv = inv / inv[present].mean()
    return inv.float()


def balanced_order(labels: Tensor, generator: Generator) -> Tensor:
    """len(labels) indices drawn with replacement, each with probability 1 / count of its label.

    Drawn as "a class uniformly, then one of its images uniformly", which is that distribution
    without torch.multinomial's 2**24-category limit.
    """
    import torch

    y = labels.cpu()
    n = len(y)
    counts = torch.bincount(y)
    present = torch.nonzero(counts).flatten()
    by_class = torch.argsort(y, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    cls = present[torch.randint(len(present), (n,), generator=generator)]
    within = (torch.rand(n, generator=generator, dtype=torch.float64) * counts[cls]).long()
    within = torch.minimum(within, counts[cls] - 1)  # rand < 1, but a product may round up to the count
    return by_class[starts[cls] + within]


class _WeightedLoss(TrainHooks):
    def __init__(self, counts: Sequence[int]) -> None:
        self.weights = inverse_frequency(counts)

    def class_weights(self) -> Tensor:
        return self.weights


class _BalancedSampler(TrainHooks):
    def train_order(self, labels: Tensor, generator: Generator) -> Tensor:
        return balanced_order(labels, generator)


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    if config.imbalance == "weighted_loss":
        return _WeightedLoss(context.class_counts)
    if config.imbalance == "balanced_sampler":
        return _BalancedSampler()
    return None


register(Strategy(
    "imbalance", Param(str, "none", "class-imbalance remedy", choices=IMBALANCE),
    "imbalance", "rare classes count more: inverse-frequency loss weights or a class-balanced sampler",
    off="none",
    advice=(Advice(("imbalance",), {"choices": list(IMBALANCE)},
                   "imbalance: weight the loss by inverse class frequency or draw every class equally often"),),
    hooks=_hooks,
))
