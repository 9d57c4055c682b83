"""The complete configuration of one trial: every param's value, plain data.

Which params exist, their defaults and their rules are declared by the strategy registry
(:mod:`search.strategies`), which calls :meth:`TrialConfig.declare` once per param. This module
imports nothing of ours, so every layer can hold and pass a config.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Iterator, Mapping


class TrialConfig:
    """Everything one trial needs besides the data and the objective.

    Values not given take the registered default, looked up when read, so a config built before
    the registry finished loading still reads every default.
    """

    # The params of the built-in strategies, declared here so that readers and type checkers see
    # them (annotations only: values come from the registry's defaults, looked up when read).
    # tests/test_layers.py checks this block against the registry: names, order and types.
    # Registration order (search/strategies/__init__.py):
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    warmup_epochs: int
    batch_size: int
    epochs: int | None
    label_smoothing: float
    grad_clip: float
    seed: int | None
    augment: str | list[Any]
    input_size: int | None
    aspect: str
    color: str
    normalize: str
    backbone: str
    pretrained: bool
    finetune: str
    depth: int
    width: int
    residual: bool
    norm: str
    lrn_size: int
    dropout: float
    drop_path: float
    mix: str
    mix_alpha: float
    imbalance: str
    policy: str
    policy_ops: int
    policy_magnitude: int
    autoaugment_policy: str
    ema_decay: float
    tta: str
    restore_best_epoch: bool
    compile: bool

    _defaults: ClassVar[dict[str, Any]] = {}
    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        known = self.known()
        unknown = [k for k in values if k not in known]
        if unknown:
            raise TypeError(f"unknown params {', '.join(unknown)}; known: {', '.join(known)}")
        object.__setattr__(self, "_values", {k: _plain(v) for k, v in values.items()})

    @classmethod
    def declare(cls, name: str, default: Any) -> None:
        """Add a param (called by the strategy registry, once per param)."""
        if name in cls._defaults:
            raise ValueError(f"param {name!r} declared twice")
        if name.startswith("_") or name in dir(cls):
            raise ValueError(f"param name {name!r} clashes with TrialConfig itself")
        cls._defaults[name] = default

    @classmethod
    def undeclare(cls, name: str) -> None:
        cls._defaults.pop(name)

    @classmethod
    def names(cls) -> list[str]:
        return list(cls._defaults)

    @classmethod
    def known(cls) -> list[str]:
        """The params a config may hold: the declared fields above, and any a plugin strategy declared."""
        fields = [name for name in cls.__annotations__ if not name.startswith("_")]
        return list(dict.fromkeys([*fields, *cls._defaults]))

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        if name in TrialConfig._defaults:
            return copy.deepcopy(TrialConfig._defaults[name])
        raise AttributeError(f"TrialConfig has no param {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._defaults:
            raise AttributeError(f"TrialConfig has no param {name!r}")
        self._values[name] = _plain(value)

    def replace(self, **changes: Any) -> "TrialConfig":
        """A copy with ``changes`` applied (the config itself is unchanged)."""
        return TrialConfig(**{**self._values, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every param's value (defaults included), JSON-able."""
        out = copy.deepcopy(self._defaults)
        out.update(copy.deepcopy(self._values))
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """A config from stored values; keys that are not params (older or newer versions) are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls._defaults})

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.to_dict().items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrialConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"TrialConfig({given})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._values)

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(state))


def _plain(value: Any) -> Any:
    # Stored configs are JSON: a tuple (an augmentation list) is kept as a list.
    return list(value) if isinstance(value, tuple) else value


__all__ = ["TrialConfig"]
