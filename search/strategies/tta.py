"""Flip test-time augmentation (``tta``): logits averaged over the image and its mirror image.

An inference wrapper, so it applies wherever the model is evaluated (validation every epoch,
test, ``predict``) and inside the exported TorchScript and ONNX graphs. It holds no weights of
its own: checkpoints and exports save the bare model, and the wrapper is put back on load.
"""

from __future__ import annotations

from torch import Tensor, nn

from search.core.config import TrialConfig
from search.strategies.base import Param, Strategy, register

MODES = ("none", "flip")


class FlipTTA(nn.Module):
    """``(model(x) + model(x flipped left-right)) / 2`` for images (N, C, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        # Two passes rather than one on a doubled batch: evaluation memory stays what it was.
        return (self.model(x) + self.model(x.flip(-1))) / 2


def _inference(config: TrialConfig, model: nn.Module) -> nn.Module:
    return FlipTTA(model) if config.tta == "flip" else model


register(Strategy(
    "tta", Param(str, "none", "test-time augmentation at evaluation and in exports", choices=MODES),
    "evaluation", "flip test-time augmentation: average the logits of each image and its mirror image "
    "(helps when a mirrored image is the same class, e.g. with flip augmentation; not for digits or text)",
    off="none",
    inference=_inference,
))
