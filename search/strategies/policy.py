"""Learned augmentation policies (``policy``): TrivialAugment, RandAugment, AutoAugment, AugMix.

The torchvision.transforms.v2 implementations, applied to the uint8 RGB training batch before
color conversion and normalization (so gray, HSV and Lab models see augmented RGB converted as
usual), after any ``augment`` ops. Each image gets its own draw (a batch-level call would apply
one op to all of them). Draws come from torch's global RNG, which the trainer seeds, so a seeded
trial is reproducible. Validation, test and exported models never see a policy.

Every policy works at any image size (checked down to 1x1 px); on very small inputs (under ~16 px)
its shears, translations and rotations move whole pixels, so they act coarsely rather than fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from search.core.config import TrialConfig
from search.data.transforms import tv2
from search.core.registry import Registry
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import Tensor
    from torchvision.transforms import v2

OFF = "none"
POLICIES: Registry[Callable[[TrialConfig], v2.Transform]] = Registry("augmentation policy")


# The values of torchvision's ``AutoAugmentPolicy``, spelled here so that a space validates without
# importing torchvision (tests/test_policy.py checks they are exactly the enum's).
AUTOAUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")


MAX_MAGNITUDE = 30  # RandAugment's default 31 magnitude bins: 0..30


@POLICIES.register("trivialaugment")
def _trivialaugment(c: TrialConfig) -> v2.Transform:
    return tv2().TrivialAugmentWide()


@POLICIES.register("randaugment")
def _randaugment(c: TrialConfig) -> v2.Transform:
    return tv2().RandAugment(num_ops=c.policy_ops, magnitude=c.policy_magnitude, num_magnitude_bins=MAX_MAGNITUDE + 1)


@POLICIES.register("autoaugment")
def _autoaugment(c: TrialConfig) -> v2.Transform:
    return tv2().AutoAugment(tv2().AutoAugmentPolicy(c.autoaugment_policy))


@POLICIES.register("augmix")
def _augmix(c: TrialConfig) -> v2.Transform:
    return tv2().AugMix()


def make_policy(config: TrialConfig) -> v2.Transform | None:
    """The config's policy as a per-image transform, or None when ``policy`` is ``none``."""
    return None if config.policy == OFF else POLICIES.get(config.policy)(config)


class PolicyAugment(TrainHooks):
    """Applies a policy to every image of a uint8 (N, 3, H, W) batch, one draw per image."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def augment(self, batch: Tensor) -> Tensor:
        import torch

        return torch.stack([self.transform(img) for img in batch])


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    transform = make_policy(config)
    return None if transform is None else PolicyAugment(transform)


register(Strategy(
    "policy", Param(str, OFF, "learned augmentation policy (none: off)", choices=lambda: [OFF, *POLICIES.names()]),
    "augmentation", "learned augmentation policies (torchvision): TrivialAugmentWide, RandAugment, AutoAugment, AugMix",
    options={
        "policy_ops": Param(int, 2, "RandAugment: ops applied to each image (num_ops)", low=1, high=14),
        "policy_magnitude": Param(int, 9, "RandAugment: strength of every op (magnitude)", low=0, high=MAX_MAGNITUDE),
        "autoaugment_policy": Param(str, "imagenet", "AutoAugment: the policy learned on this dataset",
                                    choices=AUTOAUGMENT_POLICIES),
    },
    off=OFF,
    advice=(Advice(("overfitting", "small_data"), {"choices": [OFF, "trivialaugment", "randaugment"]},
                   "overfitting or few images: a learned policy makes more of each training image"),),
    hooks=_hooks,
))
