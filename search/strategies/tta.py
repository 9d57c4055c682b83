"""Test-time augmentation (``tta``): logits averaged over an image and its mirror image, or over all
eight images of its dihedral group (quarter turns and mirror images).

An inference wrapper, so it applies wherever the model is evaluated (validation every epoch,
test, ``predict``) and inside the exported TorchScript and ONNX graphs. It holds no weights of
its own: checkpoints and exports save the bare model, and the wrapper is put back on load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, register

if TYPE_CHECKING:
    from torch import nn

MODES = ("none", "flip", "dihedral")


def _inference(config: TrialConfig, model: nn.Module) -> nn.Module:
    # The wrappers are nn.Modules (search.models.tta): imported only when a model is evaluated.
    if config.tta == "flip":
        from search.models.tta import FlipTTA

        return FlipTTA(model)
    if config.tta == "dihedral":
        from search.models.tta import DihedralTTA

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
