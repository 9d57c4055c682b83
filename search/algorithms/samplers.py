"""Optuna samplers by the names space files use; each one checks its own options and fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from search.algorithms.mo_asha import MultiObjectiveASHA
from search.core.registry import Option, Registry
from search.core.spec import ParamSpec, SearchSpace


@dataclass(frozen=True)
class SamplerDef:
    """A sampler: how to build it, the options it takes, and which spaces it can search."""

    create: Callable[[SearchSpace, int], BaseSampler]
    options: Mapping[str, Option] = field(default_factory=dict)
    # (key, why) when the space's params or objectives do not suit this sampler
    fits: Callable[[Sequence[ParamSpec], int], tuple[str, str] | None] = lambda params, n_objectives: None


SAMPLERS: Registry[SamplerDef] = Registry("sampler")


def _option(space: SearchSpace, name: str) -> int:
    sampler = SAMPLERS.get(space.sampler.name)
    return int(space.sampler.options.get(name, sampler.options[name].default))


def startup_trials(space: SearchSpace) -> int | None:
    """How many random start-up trials the space's sampler draws before it models (None: it has no start-up)."""
    if "n_startup_trials" not in SAMPLERS.get(space.sampler.name).options:
        return None
    return _option(space, "n_startup_trials")


def _tpe(space: SearchSpace, seed: int) -> BaseSampler:
    # multivariate+group model conditional (``when:``) params jointly; constant_liar keeps
    # parallel workers from all sampling next to the same running trial.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=_option(space, "n_startup_trials"),
                                      multivariate=True, group=True, constant_liar=True)


def _cmaes(space: SearchSpace, seed: int) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=_option(space, "n_startup_trials"),
                                        warn_independent_sampling=False)


def _cmaes_fits(params: Sequence[ParamSpec], n_objectives: int) -> tuple[str, str] | None:
    if n_objectives > 1:
        return "sampler", "cmaes is single-objective; use tpe or random for several objectives"
    for p in params:
        if p.kind == "choices":
            return f"params.{p.name}", "cmaes samples numeric ranges only; use tpe for categorical params"
    return None


class _BudgetedGridSampler(optuna.samplers.GridSampler):
    """GridSampler that leaves stopping to the study budget (the grid size by default).

    Workers drive trials with ask/tell, where Optuna's ``study.stop()`` (called by GridSampler
    once the grid is used up) is not available.
    """

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        return None


def _grid_fits(params: Sequence[ParamSpec], n_objectives: int) -> tuple[str, str] | None:
    for p in params:
        if p.kind == "float":
            return f"params.{p.name}.float", "grid needs finite values; use {choices: [...]} or an int range"
        if p.when:
            return f"params.{p.name}.when", "grid search does not support conditional params"
    if not any(p.kind in ("choices", "int") for p in params):
        return "sampler", "grid needs at least one param with choices"
    return None


SAMPLERS.add("tpe", SamplerDef(_tpe, {"n_startup_trials": Option(5, "random trials before TPE models")}))
SAMPLERS.add("random", SamplerDef(lambda space, seed: optuna.samplers.RandomSampler(seed=seed)))
SAMPLERS.add("cmaes", SamplerDef(_cmaes, {"n_startup_trials": Option(1, "random trials before CMA-ES")},
                                 fits=_cmaes_fits))
SAMPLERS.add("grid", SamplerDef(lambda space, seed: _BudgetedGridSampler(space.grid(), seed=seed), fits=_grid_fits))


def create_sampler(space: SearchSpace, seed: int | None = None) -> BaseSampler:
    return SAMPLERS.get(space.sampler.name).create(space, space.seed if seed is None else seed)


def grid_size(space: SearchSpace) -> int:
    size = 1
    for values in space.grid().values():
        size *= len(values)
    return size


class SamplerOnView(BaseSampler):
    """``sampler``, reading the study through ``view`` (e.g. without its pruned trials); what it
    samples, and the trials it samples for, are its own."""

    def __init__(self, sampler: BaseSampler, view: Callable[[optuna.Study], Any]) -> None:
        self.sampler = sampler
        self.view = view

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self.view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(self.view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(self.view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(self.view(study), trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(self.view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def learning_from(sampler: BaseSampler, pruner: Any, without_pruned: Callable[[optuna.Study], Any]) -> BaseSampler:
    """The sampler a study uses under ``pruner``: TPE in a study that MO-ASHA prunes models its
    completed trials only (``without_pruned`` is the study's view without its pruned trials).

    With several objectives Optuna stores no intermediate values, so TPE ranks every pruned trial
    below every completed one and learns that where trials were pruned is bad. Those are often the
    ends of the Pareto front (small models learn slowly in their first epochs), so it stops
    sampling there and the front loses them; measured on digits, TPE + mo_asha then never reached
    99% of the hypervolume TPE without pruning found. Modeled on its completed trials only (as BOHB
    models its largest budget, Falkner, Klein, Hutter 2018), TPE keeps its picture of the front and
    pruning only saves epochs (benchmarks/RESULTS.md, section 3c).
    """
    if isinstance(pruner, MultiObjectiveASHA) and isinstance(sampler, optuna.samplers.TPESampler):
        return SamplerOnView(sampler, without_pruned)
    return sampler
