"""The parsed search space as plain, frozen types: what every layer passes around.

:mod:`search.space.parse` builds these from YAML (and checks them); nothing here imports our other
modules except :mod:`search.core.config` and :mod:`search.core.errors`, so data, models and training can
take them as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from search.core.config import TrialConfig
from search.core.errors import UserError

OBJECTIVE_METRICS = ("accuracy", "precision", "recall", "f1")
MINIMIZED_METRICS = ("latency_ms", "params")
AVERAGES = ("macro", "micro", "binary")


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a metric on the validation split (or a cost to minimize)."""

    metric: str = "accuracy"
    average: str = "macro"
    positive_class: str | int | None = None

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in MINIMIZED_METRICS else "maximize"

    @property
    def name(self) -> str:
        if self.metric in ("accuracy",) + MINIMIZED_METRICS:
            return self.metric
        if self.average == "binary":
            return f"{self.metric}[{self.positive_class}]"
        return f"{self.metric}_{self.average}"


def positive_index(spec: ObjectiveSpec, classes: Sequence[str]) -> int | None:
    """Resolve ``positive_class`` (a name or an index) against the dataset's classes."""
    if spec.positive_class is None:
        return None
    pc = spec.positive_class
    names = [str(c) for c in classes]
    # A class *name* wins over an index: with folders 1, 2, 3, positive_class 1 is the folder "1".
    if str(pc) in names:
        return names.index(str(pc))
    if isinstance(pc, int) and not isinstance(pc, bool) and 0 <= pc < len(classes):
        return pc
    if isinstance(pc, str) and pc.isdigit() and int(pc) < len(classes):
        return int(pc)
    raise UserError(f"positive_class {pc!r} is not a class of this dataset; classes: {', '.join(classes)}")


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset name, an ImageFolder path or a CSV manifest, plus how to split it."""

    name: str | None = None
    path: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    limit: int | None = None  # use at most this many images (quick experiments, tests)
    cache_max_side: int = 256  # input size left unset: images' own square size, at most this
    csv: str | None = None  # a CSV manifest (columns path,label[,split]) ...
    root: str | None = None  # ... whose relative paths are under this folder (default: the CSV's folder)
    cache: str = "auto"  # raw (decoded) | jpeg (re-encoded, compact) | auto: jpeg when raw exceeds half the RAM
    cache_quality: int = 90  # JPEG quality of a jpeg cache

    @property
    def label(self) -> str:
        return self.name if self.name else str(self.csv or self.path)


@dataclass(frozen=True)
class Budget:
    n_trials: int | None = None
    timeout: float | None = None
    max_epochs: int = 10
    target: float | None = None  # stop rules for the whole study (search.study.stopping)
    patience: int | None = None
    min_delta: float = 0.0
    time: float | None = None  # seconds for the whole search in this run (``budget: {time: 15m}``)

    @property
    def has_stop_rules(self) -> bool:
        return self.target is not None or self.patience is not None


@dataclass(frozen=True)
class Component:
    """A sampler or pruner: a registered name and its keyword options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """``when:`` clause: the param is sampled only when another param has one of ``values``."""

    param: str
    values: tuple[Any, ...]
    negate: bool = False

    def holds(self, config: Mapping[str, Any]) -> bool:
        inside = _label(config.get(self.param)) in {_label(v) for v in self.values}
        return inside != self.negate


@dataclass(frozen=True)
class ParamSpec:
    """One entry of ``params``: categorical, int range, float range or a fixed value."""

    name: str
    kind: str  # "choices" | "int" | "float" | "fixed"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    value: Any = None
    when: tuple[Condition, ...] = ()

    def active(self, config: Mapping[str, Any]) -> bool:
        return all(c.holds(config) for c in self.when)

    def suggest(self, trial: Any) -> Any:
        """Sample this param from an Optuna trial."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        labels = [_label(c) for c in self.choices]
        picked = trial.suggest_categorical(self.name, labels)
        return self.choices[labels.index(picked)]


@dataclass(frozen=True)
class SearchSpace:
    """A whole study, as described by one space file."""

    study: str
    objectives: tuple[ObjectiveSpec, ...]
    dataset: DatasetSpec
    budget: Budget
    sampler: Component
    pruner: Component
    seed: int
    params: tuple[ParamSpec, ...]
    raw: Mapping[str, Any]  # the validated document, stored in the study for workers
    source: str = "<space>"
    description: str = ""
    weights_dir: str | None = None
    augment_sets: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    keep: str = "best"
    keep_top_k: int = 3  # trials whose files are kept when keep is top_k
    artifacts: str | None = None  # the artifact store's URL (search.core.locations), None: the default
    constraints: tuple[Any, ...] = ()  # search.space.constraints.Constraint, on the validation split
    enqueue: tuple[Mapping[str, Any], ...] = ()  # param dicts run first (search.space.enqueue)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def sample(self, trial: Any) -> TrialConfig:
        """Draw a complete :class:`TrialConfig`: sampled, fixed and default values."""
        values: dict[str, Any] = TrialConfig().to_dict()
        values["epochs"] = self.budget.max_epochs
        for spec in self.params:
            if spec.active(values):
                values[spec.name] = spec.suggest(trial)
        if values["epochs"] is None or values["epochs"] > self.budget.max_epochs:
            values["epochs"] = self.budget.max_epochs
        return TrialConfig.from_dict(values)

    def grid(self) -> dict[str, list[Any]]:
        """The grid for Optuna's GridSampler (labels for categorical choices)."""
        out: dict[str, list[Any]] = {}
        for p in self.params:
            if p.kind == "choices":
                out[p.name] = [_label(c) for c in p.choices]
            elif p.kind == "int":
                out[p.name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        return out


def _label(value: Any) -> Any:
    """Optuna stores only scalars; a list choice (an augmentation list) becomes 'a+b+c'."""
    if isinstance(value, (list, tuple)):
        return "+".join(_label(v) if not isinstance(v, Mapping) else _op_label(v) for v in value)
    if isinstance(value, Mapping):
        return _op_label(value)
    return value


def _op_label(op: Mapping[str, Any]) -> str:
    ((name, args),) = op.items()
    if isinstance(args, Mapping):
        inner = ",".join(f"{k}={v}" for k, v in args.items())
        return f"{name}({inner})"
    return f"{name}({args})"


choice_label = _label
