"""The strategy registry: each remedy is one registered :class:`Strategy` with its metadata.

A definition names its param(s), the values they take, the value that switches the remedy off
(read by ``ablate``), what ``doctor`` says about it and proposes, and, when it changes training,
a ``hooks`` factory the trainer calls. The space validator, the trainer, doctor, ablate, report
and the docs' strategy catalogue all read this registry, so a new remedy is one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from search.core.config import TrialConfig
from search.core.registry import Registry

if TYPE_CHECKING:  # types only: the registry itself must stay importable without torch
    from torch import Generator, Tensor, nn

    from search.core.spec import SearchSpace


class _NoOff:
    """Marker: the strategy has no "switched off" value (ablate leaves it alone)."""

    def __repr__(self) -> str:
        return "NO_OFF"


NO_OFF: Any = _NoOff()
GROUPS = ("optimization", "input", "augmentation", "architecture", "regularization", "imbalance", "evaluation",
          "run")


@dataclass(frozen=True)
class Param:
    """One value a space file can set: its type, default, and bounds or allowed values."""

    kind: type
    default: Any
    help: str
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    nullable: bool = False
    list_ok: bool = False  # a list is a value (augment: a list of ops), not a search over values
    check: Callable[[Any, Sequence[str]], str | None] | None = None  # a rule bounds cannot say

    def allowed(self) -> list[Any] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def problem(self, name: str, value: Any, extra_choices: Sequence[str] = ()) -> str | None:
        """Why ``value`` is not valid for this param, or None when it is."""
        if value is None:
            return None if self.nullable else f"{name} cannot be null"
        if self.check is not None:
            return self.check(value, extra_choices)
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name} must be an integer, got {value!r}"
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{name} must be a number, got {value!r}"
        if self.kind is float and not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}"
        if self.kind is str:
            if not isinstance(value, str):
                return f"{name} must be a string, got {value!r}"
            allowed = self.allowed()
            if allowed is not None and value not in allowed:
                return f"{name}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}"
            return None
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return f"{name} must be {'>=' if self.low_inclusive else '>'} {self.low}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"{name} must be <= {self.high}, got {value!r}"
        return None

    def describe(self) -> str:
        """The values in words, for listings (``strategy-search strategies``, the docs' catalogue)."""
        allowed = self.allowed()
        if allowed is not None:
            return " / ".join(map(str, allowed))
        if self.kind is bool:
            return "true / false"
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else _number(self.low)
            hi = "" if self.high is None else _number(self.high)
            return f"{self.kind.__name__} {'[' if self.low_inclusive else '('}{lo}, {hi}]"
        return self.kind.__name__


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


@dataclass(frozen=True)
class Advice:
    """What doctor says about a strategy when a finding calls for it, and what it searches."""

    findings: tuple[str, ...]  # finding kinds (search.tools.doctor): overfitting, imbalance, ...
    propose: Any  # the param's entry in the recommended space: {choices: [...]}, {float: [...]}, a value
    why: str  # one line, shown as the param's comment in the recommended space


@dataclass
class TrialContext:
    """What hooks may need to know about the trial they change."""

    num_classes: int
    class_counts: list[int]  # training images per class
    input_size: int
    steps_per_epoch: int
    epochs: int
    device: Any


class TrainHooks:
    """How a strategy changes one trial. Every method defaults to "no change"."""

    def model_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the model factory (e.g. ``drop_path_rate``)."""
        return {}

    def augment(self, batch: "Tensor") -> "Tensor":
        """A uint8 training batch (N, 3, H, W) -> augmented batch of the same shape."""
        return batch

    def train_order(self, labels: "Tensor", generator: "Generator") -> "Tensor | None":
        """Indices of one epoch's training samples, or None for a plain shuffle."""
        return None

    def class_weights(self) -> "Tensor | None":
        """Per-class loss weights, or None for an unweighted loss."""
        return None

    def mix(self, x: "Tensor", y: "Tensor") -> "tuple[Tensor, Tensor]":
        """A preprocessed float batch and its targets -> mixed batch and (soft) targets."""
        return x, y

    def start(self, model: "nn.Module") -> None:
        """Called once the model is built and on its device."""

    def train_forward(self, model: "nn.Module") -> "nn.Module":
        """What the training steps call instead of ``model`` (e.g. a compiled wrapper sharing its
        weights); evaluation, the kept weights and exports use the plain model."""
        return model

    def after_step(self, model: "nn.Module", step: int) -> None:
        """Called after every optimizer step."""

    def eval_model(self, model: "nn.Module") -> "nn.Module":
        """The model to evaluate and keep (e.g. its weight average)."""
        return model

    def epoch_end(self, model: "nn.Module", epoch: int, score: float, metrics: Any) -> None:
        """After each epoch's validation: the evaluated model, its score (higher is better) and metrics."""

    def restore(self, model: "nn.Module") -> "tuple[int, Any] | None":
        """When training ends: load other weights into ``model`` (the evaluated one) and return the epoch
        they are from and its validation metrics; None keeps the last epoch's."""
        return None


@dataclass(frozen=True)
class Strategy:
    """One remedy: its param, its options, its "off" value, doctor's advice and its hooks."""

    name: str  # the param a space file names
    param: Param
    group: str
    summary: str  # one line: what the remedy does
    options: Mapping[str, Param] = field(default_factory=dict)  # further params only this strategy reads
    off: Any = NO_OFF  # the value that switches it off, or a function (value, space) -> value | None
    off_help: str = ""  # what a function ``off`` picks, in words (listings)
    advice: tuple[Advice, ...] = ()
    hooks: Callable[[TrialConfig, TrialContext], TrainHooks | None] | None = None
    inference: Callable[[TrialConfig, "nn.Module"], "nn.Module"] | None = None  # wraps eval and exported models
    channels: Callable[[Any], int] | None = None  # input channels the value gives the model
    requires: Callable[[TrialConfig], bool] | None = None  # whether it means anything for this config
    off_also: Mapping[str, Any] = field(default_factory=dict)  # set together with the off value

    def off_value(self, value: Any, space: "SearchSpace | None" = None) -> Any:
        """The value ablate compares ``value`` with, or NO_OFF when the remedy cannot be switched off."""
        if callable(self.off):
            off = self.off(value, space)
            return NO_OFF if off is None else off
        return self.off

    def params(self) -> dict[str, Param]:
        return {self.name: self.param, **self.options}


STRATEGIES: Registry[Strategy] = Registry("strategy")
PARAMS: dict[str, Param] = {}  # every param of every strategy, in registration order
OWNER: dict[str, str] = {}  # param -> the strategy that declares it


def register(strategy: Strategy) -> Strategy:
    """Add a strategy: its params become TrialConfig fields with their defaults."""
    if callable(strategy.off) and not strategy.off_help:
        raise ValueError(f"strategy {strategy.name!r}: a computed off value needs off_help (what it picks)")
    if strategy.group not in GROUPS:
        raise ValueError(f"strategy {strategy.name!r}: unknown group {strategy.group!r}; groups: {', '.join(GROUPS)}")
    for name, param in strategy.params().items():
        if name in PARAMS:
            raise ValueError(f"param {name!r} declared by both {OWNER[name]!r} and {strategy.name!r}")
    STRATEGIES.add(strategy.name, strategy)
    for name, param in strategy.params().items():
        PARAMS[name] = param
        OWNER[name] = strategy.name
        TrialConfig.declare(name, param.default)
    return strategy


def unregister(name: str) -> Strategy:
    """Remove a strategy and its params (a plugin unloading, a test's throwaway strategy)."""
    strategy = STRATEGIES.remove(name)
    for param in strategy.params():
        PARAMS.pop(param)
        OWNER.pop(param)
        TrialConfig.undeclare(param)
    return strategy


def check_value(name: str, value: Any, extra_choices: Sequence[str] = ()) -> str | None:
    """Why ``value`` is not valid for param ``name`` (None when it is)."""
    if name not in PARAMS:
        return f"unknown param {name!r}; allowed: {', '.join(PARAMS)}"
    return PARAMS[name].problem(name, value, extra_choices)


def owner(param: str) -> Strategy:
    return STRATEGIES.get(OWNER[param])


def active_hooks(config: TrialConfig, context: TrialContext) -> list[TrainHooks]:
    """The hooks of every strategy that changes this trial, in registration order."""
    out = []
    for name in STRATEGIES:
        make = STRATEGIES.get(name).hooks
        if make is not None:
            hooks = make(config, context)
            if hooks is not None:
                out.append(hooks)
    return out


def inference_model(config: TrialConfig, model: "nn.Module") -> "nn.Module":
    """``model`` wrapped as the trial's strategies evaluate it (and as exports contain it)."""
    for name in STRATEGIES:
        wrap = STRATEGIES.get(name).inference
        if wrap is not None:
            model = wrap(config, model)
    return model


def input_channels(config: TrialConfig) -> int:
    """The number of channels the model sees (the color space decides)."""
    for name in STRATEGIES:
        strategy = STRATEGIES.get(name)
        if strategy.channels is not None:
            return strategy.channels(getattr(config, name))
    return 3
