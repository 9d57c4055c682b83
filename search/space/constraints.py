"""Business constraints (``constraints:`` in a space file): bounds on recorded validation metrics.

``constraints: {latency_ms: {max: 5}, params: {max: 2000000}, precision: {min: 0.9}}``

Each bound becomes one Optuna constraint value per trial (``trial.set_constraint``, stored as
the system attr ``constraints:<label>``): the violation relative to the bound, <= 0 when it
holds. TPE and NSGA-II read these values and learn the feasible region, and Optuna's
``best_trial`` / ``best_trials`` (so ``best``, ``export``, ``confirm`` and the Pareto front)
consider feasible trials only.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# Constraint name -> where the value sits in a finished trial's user attrs.
CONSTRAINT_METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("val", "accuracy"),
    "precision": ("val", "precision_macro"),
    "recall": ("val", "recall_macro"),
    "f1": ("val", "f1_macro"),
    "precision_macro": ("val", "precision_macro"),
    "recall_macro": ("val", "recall_macro"),
    "f1_macro": ("val", "f1_macro"),
    "loss": ("val", "loss"),
    "latency_ms": ("latency_ms",),
    "params": ("n_params",),
    "epoch_seconds": ("epoch_seconds",),
}
BOUNDS = ("min", "max")
# Metrics that lie in [0, 1].
QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro")
# Metrics that depend on the architecture only: measured on the built model before training, so a
# trial that cannot meet them is stopped before its first step (and the sampler still learns why).
ARCHITECTURE_METRICS = ("params", "latency_ms")


@dataclass(frozen=True)
class Constraint:
    """``metric`` must stay >= ``min`` and/or <= ``max`` (on the validation split)."""

    metric: str
    min: float | None = None
    max: float | None = None

    def bounds(self) -> list[tuple[str, float]]:
        return [(op, v) for op, v in ((">=", self.min), ("<=", self.max)) if v is not None]


def parse_constraints(c: Any, raw: Any) -> tuple[Constraint, ...]:
    """Validate the ``constraints:`` mapping (``c`` is search.space.parse's checker, so errors name the file)."""
    if raw is None:
        return ()
    allowed = list(CONSTRAINT_METRICS)
    if not isinstance(raw, Mapping):
        raise c.fail("constraints", f"expected a mapping metric -> {{min: x, max: y}}; metrics: {', '.join(allowed)}")
    out = []
    for name, spec in raw.items():
        key = f"constraints.{name}"
        if name not in CONSTRAINT_METRICS:
            raise c.fail(key, f"unknown metric; trials record: {', '.join(allowed)}")
        spec = c.mapping(spec, key, BOUNDS)
        if not spec:
            raise c.fail(key, "give min, max or both")
        lo = None if spec.get("min") is None else float(c.number(spec["min"], f"{key}.min"))
        hi = None if spec.get("max") is None else float(c.number(spec["max"], f"{key}.max"))
        if lo is None and hi is None:
            raise c.fail(key, "give min, max or both")
        if lo is not None and hi is not None and lo > hi:
            raise c.fail(key, f"min {lo:g} is above max {hi:g}")
        if name in ("latency_ms", "params", "epoch_seconds") and hi is not None and hi <= 0:
            raise c.fail(f"{key}.max", f"{name} is always > 0; give a max > 0, got {hi:g}")
        if name in QUALITY_METRICS:  # a bound no trial can meet makes every trial infeasible
            if lo is not None and lo > 1:
                raise c.fail(f"{key}.min", f"{name} lies in 0..1; give a min <= 1, got {lo:g}")
            if hi is not None and hi < 0:
                raise c.fail(f"{key}.max", f"{name} lies in 0..1; give a max >= 0, got {hi:g}")
        if name == "loss" and hi is not None and hi < 0:
            raise c.fail(f"{key}.max", f"the loss is never negative; give a max >= 0, got {hi:g}")
        out.append(Constraint(name, lo, hi))
    return tuple(out)


def metric_value(name: str, attrs: Mapping[str, Any]) -> float | None:
    """The recorded value of constraint metric ``name`` in a trial's user attrs (None: not recorded)."""
    value: Any = attrs
    for part in CONSTRAINT_METRICS[name]:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is None else float(value)


def label(metric: str, op: str, bound: float) -> str:
    return f"{metric}{op}{bound:g}"


def violations(constraints: Iterable[Constraint], attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per bound: the value, the bound and the violation relative to the bound (<= 0: it holds).

    Relative, so that a trial's total violation adds milliseconds and parameter counts fairly.
    A metric that was not recorded (a pruned trial) gets violation 0: unknown, not held against it.
    """
    out: dict[str, dict[str, Any]] = {}
    for con in constraints:
        value = metric_value(con.metric, attrs)
        for op, bound in con.bounds():
            if value is None:
                v = 0.0
            else:
                excess = value - bound if op == "<=" else bound - value
                v = excess / (abs(bound) if bound else 1.0)
            out[label(con.metric, op, bound)] = {"value": value, "bound": bound, "violation": v}
    return out


def all_hold(found: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether every bound of :func:`violations`' result holds (violation <= 0)."""
    return all(v["violation"] <= 0 for v in found.values())


def total_violation(trial: Any) -> float:
    """Sum of the positive constraint values of a (frozen) trial: 0 for a feasible one."""
    return sum(v for v in trial.constraints.values() if v > 0)


def is_feasible(trial: Any) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def closest(trials: Iterable[Any]) -> Any | None:
    """The trial with the least total violation (ties: the earlier one)."""
    return min(trials, key=lambda t: (total_violation(t), t.number), default=None)


def device_label(device: Any) -> str:
    """``cuda:0 (NVIDIA H100 ...)`` or ``cpu (x86_64, 2 threads)``: where latency was measured."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    cpu = platform.processor() or platform.machine()
    return f"{dev} ({cpu}, {torch.get_num_threads()} threads)"
