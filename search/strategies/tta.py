"""Test-time augmentation (``tta``): logits averaged over an image and its mirror image, or over all
eight images of its dihedral group (quarter turns and mirror images).

An inference wrapper, so it applies wherever the model is evaluated (validation every epoch,
test, ``predict``) and inside the exported TorchScript and ONNX graphs. It holds no weights of
its own: checkpoints and exports save the bare model, and the wrapper is put back on load.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, register

MODES = ("none", "flip", "dihedral")


class FlipTTA(nn.Module):
    """``(model(x) + model(x flipped left-right)) / 2`` for images (N, C, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        # Two passes rather than one on a doubled batch: evaluation memory stays what it was.
        return (self.model(x) + self.model(x.flip(-1))) / 2


class DihedralTTA(nn.Module):
    """The mean of the logits of the 8 images of the dihedral group D4 (4 quarter turns, each also
    mirrored) of square images (N, C, S, S): for data with no canonical orientation, where every
    turned or mirrored image is the same class (search.data.transforms.dihedral, as one graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        # The group as flips of the image and of its transpose (ONNX has no rot90; flips and a
        # transpose export everywhere): {x, x.T} x {no flip, left-right, upside down, both}.
        total = torch.zeros(0)
        for view in (x, x.transpose(2, 3)):
            for flipped in (view, view.flip(3), view.flip(2), view.flip(2).flip(3)):
                out = self.model(flipped)
                total = out if total.numel() == 0 else total + out
        return total / 8


def _inference(config: TrialConfig, model: nn.Module) -> nn.Module:
    if config.tta == "flip":
        return FlipTTA(model)
    if config.tta == "dihedral":
        return DihedralTTA(model)
    return model


register(Strategy(
    "tta", Param(str, "none", "test-time augmentation at evaluation and in exports", choices=MODES),
    "evaluation", "test-time augmentation: average the logits of each image and its mirror image (flip), or of "
    "its 8 quarter turns and mirror images (dihedral); only where a mirrored (turned) image is the same class, "
    "not for digits or text",
    off="none",
    advice=(Advice(("no_orientation",), {"choices": ["none", "dihedral"]},
                   "no canonical orientation: averaging the 8 turned and mirrored views is free accuracy"),
            Advice(("mirror_free",), {"choices": ["none", "flip"]},
                   "mirror images are the same class: averaging an image and its mirror image")),
    inference=_inference,
))
