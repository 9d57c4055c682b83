"""A running trial judged epoch by epoch beyond Optuna's one value per step.

Optuna's ``trial.report`` takes one number per step and refuses studies with several objectives, so
this module keeps each trial's values per objective in our records (``records.INTERMEDIATE``:
costs at step 0, quality metrics per epoch) and decides from them:

* **several objectives**: at each rung, :class:`search.algorithms.mo_asha.MultiObjectiveASHA` ranks
  the trial among every trial that reached the same epoch;
* **quality constraints** (``precision: {min: 0.9}``): a trial whose value so far, plus the largest
  gain from this epoch to the end that any completed trial of the study showed, still misses the
  bound cannot plausibly meet it, and is pruned like an unpromising trial (in any study that prunes).
  Costs (``params``, ``latency_ms``) are judged before training instead (``Objective._judge_architecture``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from search import records
from search.algorithms.mo_asha import MultiObjectiveASHA
from search.core.spec import MINIMIZED_METRICS, SearchSpace
from search.space.constraints import ARCHITECTURE_METRICS, CONSTRAINT_METRICS, Constraint, label, metric_value
from search.train.loop import EpochLog

log = logging.getLogger(__name__)

# Completed trials whose curves must be known before a quality constraint is judged during training.
MIN_REFERENCE_TRIALS = 3
# Bounds on a split's metrics (not on costs, which are judged before training or after it).
QUALITY_PATH = "val"
# States whose recorded values a rung compares with (a WAITING trial has none; a FAIL one reached them).
COMPARED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def quality_constraints(space: SearchSpace) -> list[Constraint]:
    """The space's bounds on validation metrics, which a learning curve can miss."""
    return [c for c in space.constraints if c.metric not in ARCHITECTURE_METRICS
            and CONSTRAINT_METRICS[c.metric][0] == QUALITY_PATH and judged_bounds(c)]


def columns_of(space: SearchSpace) -> list[str]:
    """The names recorded per step: each objective, then each constrained quality metric not among them."""
    names = [o.name for o in space.objectives]
    for c in quality_constraints(space):
        if c.metric not in names:
            names.append(c.metric)
    return names


def records_curves(space: SearchSpace) -> bool:
    """Whether trials of ``space`` record their per-step values (several objectives, or quality bounds)."""
    return space.multi_objective or bool(quality_constraints(space))


@dataclass(frozen=True)
class OutOfReach:
    """A quality bound a trial cannot plausibly meet any more, and the evidence."""

    constraint: str  # its label, e.g. precision>=0.9
    value: float  # the trial's value at this epoch
    best_gain: float  # the largest gain from this epoch on among the reference trials
    n_reference: int

    def describe(self, epoch: int) -> str:
        return (f"{self.constraint} out of reach at epoch {epoch}: {self.value:.4f} now, and no completed trial "
                f"gained more than {self.best_gain:.4f} after epoch {epoch} ({self.n_reference} compared)")


def improves_upward(metric: str) -> bool:
    """Whether training raises ``metric`` (accuracy, precision...) rather than lowers it (loss)."""
    return metric != "loss"


def judged_bounds(constraint: Constraint) -> list[tuple[str, float]]:
    """The bounds a learning curve can miss: a floor on a metric training raises, a ceiling on the loss
    (a ceiling on accuracy is never out of reach by training less well)."""
    up = improves_upward(constraint.metric)
    return [(op, bound) for op, bound in constraint.bounds() if (op == ">=") == up]


def gains_after(step: int, metric: str, trials: Iterable[Any]) -> list[float]:
    """For each completed trial with ``metric`` recorded at ``step`` and at a later step: how much it
    improved from ``step`` to its last recorded value (negative: it got worse)."""
    up = improves_upward(metric)
    out = []
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        columns = records.intermediate(t)
        steps, column = columns.get("step") or [], columns.get(metric) or []
        pairs = [(s, v) for s, v in zip(steps, column) if v is not None]
        now = next((v for s, v in pairs if s == step), None)
        later = [v for s, v in pairs if s > step]
        if now is None or not later:
            continue
        out.append((later[-1] - now) if up else (now - later[-1]))
    return out


def out_of_reach(constraint: Constraint, value: float, gains: Sequence[float]) -> OutOfReach | None:
    """Whether ``value`` improved by the best of ``gains`` (see :func:`gains_after`) still misses a
    bound of ``constraint``; None while fewer than :data:`MIN_REFERENCE_TRIALS` gains are known."""
    if len(gains) < MIN_REFERENCE_TRIALS or not math.isfinite(value):
        return None
    best = max(0.0, max(gains))
    for op, bound in judged_bounds(constraint):
        if (value + best < bound) if op == ">=" else (value - best > bound):
            return OutOfReach(label(constraint.metric, op, bound), value, best, len(gains))
    return None


class TrialJudge:
    """One running trial's per-step record and the verdicts on it; :meth:`epoch` returns why to
    prune (None: it goes on)."""

    def __init__(self, space: SearchSpace, trial: optuna.Trial, last_epoch: int) -> None:
        self.space = space
        self.trial = trial
        self.last_epoch = last_epoch
        pruner = trial.study.pruner
        self.pruner = pruner if isinstance(pruner, MultiObjectiveASHA) else None
        self.quality = quality_constraints(space)
        self.judges_constraints = bool(self.quality) and not isinstance(pruner, optuna.pruners.NopPruner)
        self.names = columns_of(space)
        self.objectives = [o.name for o in space.objectives]
        self.enabled = records_curves(space)
        self.columns: dict[str, list[Any]] = {"step": [], **{n: [] for n in self.names}}

    def costs(self, costs: Mapping[str, float]) -> None:
        """Step 0: the model's costs, known before its first step (the objectives that are costs)."""
        if not self.enabled:
            return
        row = {o.name: costs.get(o.metric) if o.metric in MINIMIZED_METRICS else None for o in self.space.objectives}
        self._add(0, row)

    def epoch(self, entry: EpochLog) -> str | None:
        """Record ``entry``'s values; why the trial is pruned now, or None."""
        if not self.enabled:
            return None
        row: dict[str, float | None] = dict(zip(self.objectives, entry.values))
        metrics = {QUALITY_PATH: entry.metrics.to_dict(())} if entry.metrics is not None else {}
        for c in self.quality:
            row.setdefault(c.metric, metric_value(c.metric, metrics))
        self._add(entry.epoch, row)
        if entry.epoch >= self.last_epoch:
            return None  # the last epoch: pruning saves nothing
        trials: list[Any] | None = None
        if self.judges_constraints:
            trials = self._others()
            why = self._constraints(entry.epoch, row, trials)
            if why is not None:
                return why
        if self.pruner is not None and self.pruner.is_rung(entry.epoch):
            trials = trials if trials is not None else self._others()
            verdict = self.pruner.judge(entry.epoch, [row[n] if row[n] is not None else math.nan
                                                      for n in self.objectives],
                                        self._at(entry.epoch, trials), _finished(trials))
            log.debug("trial %d: %s", self.trial.number, verdict.reason)
            if verdict.prune:
                return verdict.reason
        return None

    def _add(self, step: int, row: Mapping[str, float | None]) -> None:
        self.columns["step"].append(step)
        for name in self.names:
            v = row.get(name)
            # JSON has no NaN: an unknown value is null.
            self.columns[name].append(None if v is None or not math.isfinite(v) else float(v))
        records.record_intermediate(self.trial, self.columns)

    def _others(self) -> list[Any]:
        return [t for t in self.trial.study.get_trials(deepcopy=False) if t.number != self.trial.number]

    def _at(self, step: int, trials: Sequence[Any]) -> list[list[float]]:
        out = []
        for t in trials:
            if t.state in COMPARED:
                values = records.intermediate_at(records.intermediate(t), step, self.objectives)
                if values is not None:
                    out.append(values)
        return out

    def _constraints(self, step: int, row: Mapping[str, float | None], trials: Sequence[Any]) -> str | None:
        for c in self.quality:
            value = row.get(c.metric)
            if value is None:
                continue
            found = out_of_reach(c, value, gains_after(step, c.metric, trials))
            if found is None:
                continue
            reason = found.describe(step)
            records.record_fail_reason(self.trial, reason)
            return reason
        return None


def _finished(trials: Iterable[Any]) -> int:
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
