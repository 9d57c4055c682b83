"""Optuna samplers by the names space files use."""

from __future__ import annotations

from typing import Callable

import optuna
from optuna.samplers import BaseSampler

from search.registry import Registry
from search.space import SearchSpace

SAMPLERS: Registry[Callable[[SearchSpace, int], BaseSampler]] = Registry("sampler")
# Options a space file may give each sampler (validated by search.space).
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "tpe": ("n_startup_trials",), "random": (), "cmaes": ("n_startup_trials",), "grid": (),
}


@SAMPLERS.register("tpe")
def _tpe(space: SearchSpace, seed: int) -> BaseSampler:
    # multivariate+group model conditional (``when:``) params jointly; constant_liar keeps
    # parallel workers from all sampling next to the same running trial.
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=int(space.sampler.options.get("n_startup_trials", 5)),
        multivariate=True, group=True, constant_liar=True,
    )


@SAMPLERS.register("random")
def _random(space: SearchSpace, seed: int) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("cmaes")
def _cmaes(space: SearchSpace, seed: int) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=int(space.sampler.options.get("n_startup_trials", 1)),
        warn_independent_sampling=False,
    )


class _BudgetedGridSampler(optuna.samplers.GridSampler):
    """GridSampler that leaves stopping to the study budget (the grid size by default).

    Workers drive trials with ask/tell, where Optuna's ``study.stop()`` (called by GridSampler
    once the grid is used up) is not available.
    """

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        return None


@SAMPLERS.register("grid")
def _grid(space: SearchSpace, seed: int) -> BaseSampler:
    return _BudgetedGridSampler(space.grid(), seed=seed)


def create_sampler(space: SearchSpace, seed: int | None = None) -> BaseSampler:
    return SAMPLERS.get(space.sampler.name)(space, space.seed if seed is None else seed)


def grid_size(space: SearchSpace) -> int:
    size = 1
    for values in space.grid().values():
        size *= len(values)
    return size


assert set(SAMPLER_OPTIONS) == set(SAMPLERS.names()), "every sampler lists its options"
