"""Architecture strategies: backbone, transfer learning, depth, width, residual blocks, normalization."""

from __future__ import annotations

from search.models.backbones import FINETUNE_MODES, check_backbone
from search.models.norms import NORMS
from search.strategies.base import Param, Strategy, register
from search.strategies.input import smallest

register(Strategy(
    "backbone", Param(str, "none", "'none' (the built-in CNN) or a timm model name",
                      check=lambda value, extra: check_backbone(value)),
    "architecture", "a timm backbone instead of the built-in CNN", off="none", off_also={"pretrained": False},
))
register(Strategy(
    "pretrained", Param(bool, False, "load pretrained backbone weights"), "architecture",
    "transfer learning from a pretrained backbone (weights: a local file, else timm / Hugging Face)", off=False,
    options={"finetune": Param(str, "full", "fine-tuning mode", choices=FINETUNE_MODES.names)},
    requires=lambda config: config.backbone != "none",
))
register(Strategy(
    "depth", Param(int, 2, "conv stages of the built-in CNN", low=1, high=8), "architecture",
    "more layers", off=smallest("depth"), off_help="the smallest depth searched",
))
register(Strategy(
    "width", Param(int, 16, "channels of the first stage", low=1, high=1024), "architecture",
    "wider layers", off=smallest("width"), off_help="the smallest width searched",
))
register(Strategy(
    "residual", Param(bool, False, "residual blocks in the built-in CNN"), "architecture",
    "residual connections: deeper nets that still train", off=False,
))
register(Strategy(
    "norm", Param(str, "batchnorm", "normalization layer", choices=NORMS.names), "architecture",
    "batch norm vs local response norm (LRN) vs none",
    off=lambda value, space: "batchnorm" if value == "none" else "none", off_help="none (batchnorm when none)",
    options={"lrn_size": Param(int, 5, "LocalResponseNorm size", low=1, high=64)},
))
register(Strategy(
    "dropout", Param(float, 0.0, "dropout before the classifier", low=0.0, high=0.99), "regularization",
    "dropout before the classifier", off=0.0,
))
