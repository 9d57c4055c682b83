"""Batch-level mixing (``mix``): MixUp and CutMix from torchvision.transforms.v2, trained on soft targets.

MixUp blends each training image with its neighbour in the batch by a ratio drawn from
Beta(alpha, alpha); CutMix pastes a box of the neighbour, its area drawn the same way. The targets
become the matching mix of the two one-hot labels, which the trainer's cross-entropy takes as
probabilities (label smoothing and class weights apply to them too, see search/train/loss.py).
Only training batches are mixed: validation, test and exports see the images as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from search.core.config import TrialConfig
from search.data.transforms import tv2
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import Tensor

MIXES = ("none", "mixup", "cutmix", "mixup_cutmix")


def make_mix(kind: str, alpha: float, num_classes: int) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(float images (N, C, H, W), int labels (N,)) -> (mixed images, soft targets (N, num_classes)).

    ``mixup_cutmix`` picks one of the two per batch, as torchvision's reference recipes do. The
    draws come from torch's global generator, which the trainer seeds per trial.
    """
    mixup = tv2().MixUp(alpha=alpha, num_classes=num_classes)
    cutmix = tv2().CutMix(alpha=alpha, num_classes=num_classes)
    if kind == "mixup":
        return mixup
    if kind == "cutmix":
        return cutmix
    if kind == "mixup_cutmix":
        return tv2().RandomChoice([mixup, cutmix])
    raise ValueError(f"mix: unknown value {kind!r}; allowed: {', '.join(MIXES)}")


class _Mix(TrainHooks):
    def __init__(self, kind: str, alpha: float, num_classes: int) -> None:
        self.transform = make_mix(kind, alpha, num_classes)

    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(x, y)


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return None if config.mix == "none" else _Mix(config.mix, config.mix_alpha, context.num_classes)


register(Strategy(
    "mix", Param(str, "none", "batch mixing of training images and their labels", choices=MIXES),
    "augmentation", "MixUp / CutMix: train on blended image pairs with soft targets (or either per batch)",
    # One alpha for both: a search tunes it per choice of ``mix`` anyway, and one knob keeps the space small.
    options={"mix_alpha": Param(float, 0.2, "Beta(alpha, alpha) that draws the mixing ratio", low=0.0,
                                low_inclusive=False, high=10.0)},
    off="none",
    advice=(Advice(("overfitting",), {"choices": ["none", "mixup", "cutmix"]},
                   "overfitting: MixUp/CutMix train on blended images with soft targets, a strong regularizer"),),
    hooks=_hooks,
))
