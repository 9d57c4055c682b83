"""``create_model``: one entry point for every architecture a trial can ask for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from search.core.config import TrialConfig
from search.models.backbones import create_backbone
from search.models.cnn import SmallCNN


def create_model(config: TrialConfig, in_channels: int, num_classes: int, input_size: int,
                 weights_dir: str | Path | None = None, **extra: Any) -> nn.Module:
    """The built-in CNN when ``backbone == 'none'``, else a timm backbone with a new head.

    ``extra`` comes from the trial's strategies (e.g. ``drop_path_rate``); both families take it.
    """
    if config.backbone == "none":
        return SmallCNN(in_channels, num_classes, input_size, depth=config.depth, width=config.width,
                        residual=config.residual, norm=config.norm, lrn_size=config.lrn_size,
                        dropout=config.dropout, **extra)
    return create_backbone(config.backbone, num_classes, in_channels, pretrained=config.pretrained,
                           weights_dir=weights_dir, dropout=config.dropout, **extra)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
