"""Optuna pruners by the names space files use (epochs are the pruning resource); each checks its options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import optuna
from optuna.pruners import BasePruner

from search.core.registry import Option, Registry
from search.core.spec import SearchSpace


@dataclass(frozen=True)
class PrunerDef:
    create: Callable[[SearchSpace, Mapping[str, int]], BasePruner]
    options: Mapping[str, Option] = field(default_factory=dict)


PRUNERS: Registry[PrunerDef] = Registry("pruner")
_RESOURCE = Option(1, "epochs every trial gets before it can be pruned")
_FACTOR = Option(3, "keep 1/factor of the trials at each rung")

PRUNERS.add("median", PrunerDef(
    lambda space, o: optuna.pruners.MedianPruner(n_startup_trials=o["n_startup_trials"],
                                                 n_warmup_steps=o["n_warmup_steps"]),
    {"n_startup_trials": Option(3, "trials completed before pruning starts"),
     "n_warmup_steps": Option(1, "epochs before a trial can be pruned")},
))
class SharedHyperbandPruner(BasePruner):
    """Optuna's Hyperband, with the sampler learning from every trial instead of only the trials of
    the new trial's bracket (Optuna's default for a ``HyperbandPruner``, which splits a small
    study's TPE model, and its random start-up trials, over the brackets). Pruning is unchanged:
    each bracket still compares its own trials."""

    def __init__(self, **options: int) -> None:
        self.hyperband = optuna.pruners.HyperbandPruner(**options)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.hyperband.prune(study, trial)


def _hyperband(space: SearchSpace, o: Mapping[str, int]) -> BasePruner:
    options = {"min_resource": o["min_resource"], "max_resource": space.budget.max_epochs,
               "reduction_factor": o["reduction_factor"]}
    if o["sampler_per_bracket"]:
        return optuna.pruners.HyperbandPruner(**options)
    return SharedHyperbandPruner(**options)


PRUNERS.add("hyperband", PrunerDef(
    _hyperband,
    {"min_resource": _RESOURCE, "reduction_factor": _FACTOR,
     "sampler_per_bracket": Option(1, "1: the sampler models each bracket's trials apart (Optuna's way); "
                                      "0: it learns from all trials")},
))
PRUNERS.add("successive_halving", PrunerDef(
    lambda space, o: optuna.pruners.SuccessiveHalvingPruner(min_resource=o["min_resource"],
                                                            reduction_factor=o["reduction_factor"],
                                                            min_early_stopping_rate=o["min_early_stopping_rate"]),
    {"min_resource": _RESOURCE, "reduction_factor": _FACTOR,
     "min_early_stopping_rate": Option(0, "rungs skipped before pruning")},
))
PRUNERS.add("none", PrunerDef(lambda space, o: optuna.pruners.NopPruner()))


class SparingEnqueued(BasePruner):
    """Never prunes a trial enqueued from the space (``enqueue:``: the doctor's recipe and portfolio,
    a user's known configurations): they run whole, so the search never ends worse than them. Other
    trials are judged by ``pruner`` as before. ``enqueued`` tells them apart (the study's records,
    a layer above this one, know how a trial is marked)."""

    def __init__(self, pruner: BasePruner, enqueued: Callable[[optuna.trial.FrozenTrial], bool]) -> None:
        self.pruner = pruner
        self.enqueued = enqueued

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.enqueued(trial):
            return False
        return self.pruner.prune(study, trial)


def create_pruner(space: SearchSpace, enqueued: Callable[[optuna.trial.FrozenTrial], bool] | None = None
                  ) -> BasePruner:
    """The space's pruner; with ``enqueued`` (whether a trial came from the space's ``enqueue:``), one that
    never prunes those trials."""
    if space.multi_objective:
        # Optuna cannot prune multi-objective trials; intermediate values are not reported.
        return optuna.pruners.NopPruner()
    pruner = PRUNERS.get(space.pruner.name)
    options = {k: int(space.pruner.options.get(k, o.default)) for k, o in pruner.options.items()}
    made = pruner.create(space, options)
    return SparingEnqueued(made, enqueued) if space.enqueue and enqueued is not None else made
