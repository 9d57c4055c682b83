"""The training loss: cross-entropy over class indices or over (mixed) class probabilities, one meaning for both.

PyTorch's class-weighted cross-entropy averages index targets over the batch's weight mass
(sum of ``weight[y]``) but probability targets over the batch size, so with class weights a
MixUp/CutMix batch would be scaled differently from a plain one. Dividing by the targets'
weight mass (``sum(target @ weight)``) is the same average for both: exactly the index-target
loss when the targets are one-hot, label smoothing included.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class CrossEntropy(nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` whose weighted mean means the same for soft and hard targets."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 - PyTorch's name
        if self.weight is None or not target.is_floating_point() or self.reduction != "mean":
            return super().forward(input, target)
        total = F.cross_entropy(input, target, weight=self.weight, reduction="sum",
                                label_smoothing=self.label_smoothing)
        return total / (target.movedim(1, -1) @ self.weight).sum()
