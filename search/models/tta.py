"""Test-time augmentation wrappers (the ``tta`` strategy, :mod:`search.strategies.tta`, builds them).

Each wraps a model and averages its logits over views of the input: an image and its mirror image
(:class:`FlipTTA`), or the eight images of its dihedral group (:class:`DihedralTTA`). They hold no
weights of their own and export to TorchScript and ONNX with the model they wrap.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
