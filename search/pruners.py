"""Optuna pruners by the names space files use (epochs are the pruning resource); each checks its options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import optuna
from optuna.pruners import BasePruner

from search.registry import Option, Registry
from search.spec import SearchSpace


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
PRUNERS.add("hyperband", PrunerDef(
    lambda space, o: optuna.pruners.HyperbandPruner(min_resource=o["min_resource"],
                                                    max_resource=space.budget.max_epochs,
                                                    reduction_factor=o["reduction_factor"]),
    {"min_resource": _RESOURCE, "reduction_factor": _FACTOR},
))
PRUNERS.add("successive_halving", PrunerDef(
    lambda space, o: optuna.pruners.SuccessiveHalvingPruner(min_resource=o["min_resource"],
                                                            reduction_factor=o["reduction_factor"],
                                                            min_early_stopping_rate=o["min_early_stopping_rate"]),
    {"min_resource": _RESOURCE, "reduction_factor": _FACTOR,
     "min_early_stopping_rate": Option(0, "rungs skipped before pruning")},
))
PRUNERS.add("none", PrunerDef(lambda space, o: optuna.pruners.NopPruner()))


def create_pruner(space: SearchSpace) -> BasePruner:
    if space.multi_objective:
        # Optuna cannot prune multi-objective trials; intermediate values are not reported.
        return optuna.pruners.NopPruner()
    pruner = PRUNERS.get(space.pruner.name)
    options = {k: int(space.pruner.options.get(k, o.default)) for k, o in pruner.options.items()}
    return pruner.create(space, options)
