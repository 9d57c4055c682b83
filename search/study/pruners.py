"""Optuna pruners by the names space files use; epochs are the pruning resource."""

from __future__ import annotations

from typing import Callable

import optuna
from optuna.pruners import BasePruner

from search.registry import Registry
from search.space import SearchSpace

PRUNERS: Registry[Callable[[SearchSpace], BasePruner]] = Registry("pruner")
# Options a space file may give each pruner (validated by search.space).
PRUNER_OPTIONS: dict[str, tuple[str, ...]] = {
    "median": ("n_startup_trials", "n_warmup_steps"),
    "hyperband": ("min_resource", "reduction_factor"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
    "none": (),
}


@PRUNERS.register("median")
def _median(space: SearchSpace) -> BasePruner:
    o = space.pruner.options
    return optuna.pruners.MedianPruner(n_startup_trials=int(o.get("n_startup_trials", 3)),
                                       n_warmup_steps=int(o.get("n_warmup_steps", 1)))


@PRUNERS.register("hyperband")
def _hyperband(space: SearchSpace) -> BasePruner:
    o = space.pruner.options
    return optuna.pruners.HyperbandPruner(min_resource=int(o.get("min_resource", 1)),
                                          max_resource=space.budget.max_epochs,
                                          reduction_factor=int(o.get("reduction_factor", 3)))


@PRUNERS.register("successive_halving")
def _sha(space: SearchSpace) -> BasePruner:
    o = space.pruner.options
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(o.get("min_resource", 1)),
                                                  reduction_factor=int(o.get("reduction_factor", 3)),
                                                  min_early_stopping_rate=int(o.get("min_early_stopping_rate", 0)))


@PRUNERS.register("none")
def _none(space: SearchSpace) -> BasePruner:
    return optuna.pruners.NopPruner()


def create_pruner(space: SearchSpace) -> BasePruner:
    if space.multi_objective:
        # Optuna cannot prune multi-objective trials; intermediate values are not reported.
        return optuna.pruners.NopPruner()
    return PRUNERS.get(space.pruner.name)(space)


assert set(PRUNER_OPTIONS) == set(PRUNERS.names()), "every pruner lists its options"
