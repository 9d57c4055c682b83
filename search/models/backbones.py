"""timm backbones with pretrained weights from a local file or directory (never downloaded)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

from torch import nn

from search.errors import UserError
from search.registry import Registry

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DISCRIMINATIVE_FACTOR = 0.1  # backbone lr = head lr * this


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_backbone(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"backbone must be a string, got {name!r}"
    if name == "none" or name.split(".")[0] in _timm_names():
        return None
    return f"backbone {name!r} is neither 'none' nor a timm model (see timm.list_models())"


def find_weights(backbone: str, weights_dir: str | Path | None) -> Path:
    """The local weight file for ``backbone``: DIR/NAME.safetensors|.pth|.pt|.bin, DIR/NAME/model.*,
    or DIR/NAME.<tag>.* (timm's ``resnet18.a1_in1k`` naming)."""
    if weights_dir is None:
        raise UserError(
            f"backbone {backbone!r} is pretrained but no weights directory was given; "
            "set weights_dir in the space file or pass --weights-dir (weights are never downloaded)"
        )
    root = Path(weights_dir).expanduser()
    if root.is_file():
        return root
    if not root.is_dir():
        raise UserError(f"weights directory {root} does not exist")
    candidates = [root / f"{backbone}{s}" for s in WEIGHT_SUFFIXES]
    candidates += [root / backbone / f"{stem}{s}" for stem in ("model", "pytorch_model") for s in WEIGHT_SUFFIXES]
    for c in candidates:
        if c.is_file():
            return c
    tagged = sorted(p for p in root.glob(f"{backbone}.*") if p.suffix in WEIGHT_SUFFIXES)
    if tagged:
        return tagged[0]
    raise UserError(
        f"no weights for backbone {backbone!r} in {root}: expected one of "
        f"{', '.join(c.name for c in candidates[:len(WEIGHT_SUFFIXES)])} (or {backbone}/model.safetensors)"
    )


def create_backbone(name: str, num_classes: int, in_chans: int, *, pretrained: bool,
                    weights_dir: str | Path | None, dropout: float = 0.0, **extra: Any) -> nn.Module:
    """A timm model with a fresh ``num_classes`` head; pretrained weights come from a local file."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": dropout, **extra}
    if pretrained:
        path = find_weights(name, weights_dir)
        # source='' stops timm from preferring the hub; 'file' then wins over any URL.
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "source": ""}
        log.info("loading %s weights from %s", name, path)
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _head_params(model: nn.Module) -> list[nn.Parameter]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []


Groups = list[dict[str, Any]]
# Fine-tuning modes: (body params, head params, lr) -> optimizer param groups (the head trains at lr).
FINETUNE_MODES: Registry[Callable[[list[nn.Parameter], list[nn.Parameter], float], Groups]] = Registry("finetune mode")
FINETUNE_MODES.add("full", lambda body, head, lr: [{"params": body + head, "lr": lr}])


@FINETUNE_MODES.register("freeze")
def _freeze(body: list[nn.Parameter], head: list[nn.Parameter], lr: float) -> Groups:
    for p in body:
        p.requires_grad_(False)
    return [{"params": head, "lr": lr}]


FINETUNE_MODES.add("discriminative_lr",
                   lambda body, head, lr: [{"params": body, "lr": lr * DISCRIMINATIVE_FACTOR}, {"params": head, "lr": lr}])


def param_groups(model: nn.Module, finetune: str, lr: float) -> Groups:
    """Optimizer param groups for a fine-tuning mode (the head always trains at ``lr``)."""
    mode = FINETUNE_MODES.get(finetune)
    head = _head_params(model)
    if not head:  # no separate classifier to tell apart: everything trains
        return [{"params": list(model.parameters()), "lr": lr}]
    head_ids = {id(p) for p in head}
    return mode([p for p in model.parameters() if id(p) not in head_ids], head, lr)


def freeze_norm_statistics(model: nn.Module) -> None:
    """Keep frozen layers' BatchNorm statistics fixed (call after ``model.train()``).

    A frozen backbone should compute the same features at every step; updating its running
    statistics on the new data would shift them under the trained head.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
