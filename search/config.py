"""The complete configuration of one trial, and the catalogue of searchable params.

Every key under ``params:`` in a space file is a field of :class:`TrialConfig`. Categorical
strategy params take their allowed values from the registry that implements them, so adding a
strategy means registering it once; the space validator and the trainer both read that registry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

AugmentValue = Union[str, Sequence[Any]]


@dataclass
class TrialConfig:
    """Everything one trial needs besides the data and the objective."""

    # optimisation
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    batch_size: int = 64
    epochs: int | None = None  # None: the budget's max_epochs
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # 0 disables clipping
    # regularisation and input pipeline
    dropout: float = 0.0
    augment: AugmentValue = "none"
    input_size: int | None = None  # None: the dataset's native size
    aspect: str = "stretch"
    color: str = "rgb"
    normalize: str = "dataset"
    # architecture
    backbone: str = "none"  # "none": the built-in CNN
    depth: int = 2
    width: int = 16
    residual: bool = False
    norm: str = "batchnorm"
    lrn_size: int = 5
    pretrained: bool = False
    finetune: str = "full"
    # reproducibility: None means "space seed + trial number"
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["augment"], tuple):
            d["augment"] = list(d["augment"])
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        return cls(**{k: v for k, v in values.items() if k in PARAMS})


@dataclass(frozen=True)
class ParamInfo:
    """What a param accepts: its Python type, bounds and (for strategies) its registry."""

    kind: type
    help: str
    choices: Callable[[], list[Any]] | None = None
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    nullable: bool = False
    list_ok: bool = False  # augment also takes a list of ops


def _optimizers() -> list[str]:
    from search.train.optim import OPTIMIZERS

    return OPTIMIZERS.names()


def _schedules() -> list[str]:
    from search.train.optim import SCHEDULES

    return SCHEDULES.names()


def _colors() -> list[str]:
    from search.data.colour import COLOR_SPACES

    return COLOR_SPACES.names()


def _norms() -> list[str]:
    from search.models.cnn import NORMS

    return NORMS.names()


def _aspects() -> list[str]:
    from search.data.transforms import ASPECTS

    return list(ASPECTS)


def _normalizers() -> list[str]:
    from search.data.colour import NORMALIZERS

    return list(NORMALIZERS)


def _finetune() -> list[str]:
    from search.models.backbones import FINETUNE_MODES

    return list(FINETUNE_MODES)


PARAMS: dict[str, ParamInfo] = {
    "lr": ParamInfo(float, "learning rate", low=0.0, low_inclusive=False, high=10.0),
    "optimizer": ParamInfo(str, "optimizer", choices=_optimizers),
    "momentum": ParamInfo(float, "SGD momentum", low=0.0, high=1.0),
    "weight_decay": ParamInfo(float, "weight decay", low=0.0, high=1.0),
    "schedule": ParamInfo(str, "learning-rate schedule", choices=_schedules),
    "warmup_epochs": ParamInfo(int, "linear warm-up epochs", low=0, high=1000),
    "batch_size": ParamInfo(int, "batch size", low=1, high=65536),
    "epochs": ParamInfo(int, "epochs (at most budget.max_epochs)", low=1, high=100000, nullable=True),
    "label_smoothing": ParamInfo(float, "label smoothing", low=0.0, high=0.99),
    "grad_clip": ParamInfo(float, "gradient-norm clip (0: off)", low=0.0, high=1e6),
    "dropout": ParamInfo(float, "dropout before the classifier", low=0.0, high=0.99),
    "augment": ParamInfo(str, "augmentation set or list of ops", list_ok=True),
    "input_size": ParamInfo(int, "square input size in pixels", low=4, high=1024, nullable=True),
    "aspect": ParamInfo(str, "resize mode", choices=_aspects),
    "color": ParamInfo(str, "colour space", choices=_colors),
    "normalize": ParamInfo(str, "per-channel normalisation", choices=_normalizers),
    "backbone": ParamInfo(str, "'none' (built-in CNN) or a timm model name"),
    "depth": ParamInfo(int, "conv stages of the built-in CNN", low=1, high=8),
    "width": ParamInfo(int, "channels of the first stage", low=1, high=1024),
    "residual": ParamInfo(bool, "residual blocks in the built-in CNN"),
    "norm": ParamInfo(str, "normalisation layer", choices=_norms),
    "lrn_size": ParamInfo(int, "LocalResponseNorm size", low=1, high=64),
    "pretrained": ParamInfo(bool, "load pretrained backbone weights"),
    "finetune": ParamInfo(str, "fine-tuning mode", choices=_finetune),
    "seed": ParamInfo(int, "random seed", low=0, high=2**31 - 1, nullable=True),
}

assert set(PARAMS) == {f.name for f in dataclasses.fields(TrialConfig)}, "PARAMS and TrialConfig differ"


def check_value(name: str, value: Any, extra_choices: Sequence[str] = ()) -> str | None:
    """Return why ``value`` is not valid for param ``name``, or None when it is."""
    info = PARAMS[name]
    if value is None:
        return None if info.nullable else f"{name} cannot be null"
    if name == "augment":
        from search.data.transforms import check_augment

        return check_augment(value, extra_choices)
    if name == "backbone":
        from search.models.backbones import check_backbone

        return check_backbone(value)
    if info.kind is bool:
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    if info.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} must be an integer, got {value!r}"
    if info.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{name} must be a number, got {value!r}"
    if info.kind is float and not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if info.kind is str:
        if not isinstance(value, str):
            return f"{name} must be a string, got {value!r}"
        allowed = info.choices() if info.choices else None
        if allowed is not None and value not in allowed:
            return f"{name}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}"
        return None
    if info.low is not None and (value < info.low or (value == info.low and not info.low_inclusive)):
        op = ">=" if info.low_inclusive else ">"
        return f"{name} must be {op} {info.low}, got {value!r}"
    if info.high is not None and value > info.high:
        return f"{name} must be <= {info.high}, got {value!r}"
    return None


__all__ = ["TrialConfig", "ParamInfo", "PARAMS", "check_value"]
