"""Optuna pruners by the names space files use (epochs are the pruning resource); each checks its options."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

import optuna
from optuna.pruners import BasePruner

from search.algorithms.mo_asha import MultiObjectiveASHA
from search.algorithms.samplers import startup_trials
from search.core.registry import Option, Registry
from search.core.spec import SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrunerDef:
    create: Callable[[SearchSpace, Mapping[str, int]], BasePruner]
    options: Mapping[str, Option] = field(default_factory=dict)
    # The studies it prunes: "one" objective (Optuna's pruners compare one value per step), "several"
    # (it compares vectors of objectives), or "any".
    objectives: str = "one"
    # Options whose default depends on the space (given options still win).
    defaults: Callable[[SearchSpace], Mapping[str, int]] = lambda space: {}

    def fits(self, n_objectives: int) -> bool:
        return self.objectives == "any" or (self.objectives == "several") == (n_objectives > 1)


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


def _after_sampler_startup(space: SearchSpace) -> dict[str, int]:
    """mo_asha prunes nothing during the sampler's random start-up trials. Those trials are all the
    sampler's first model is built on, and in a study mo_asha prunes TPE models completed trials
    only (``samplers.learning_from``): pruned start-up trials would leave it a model of fewer, more
    extreme trials (the front's cheap end, which ``keep_front`` protects), and the search drifts from
    there (benchmarks/RESULTS.md, section 3c, measures 3 start-up trials against TPE's 8, and 8)."""
    startup = startup_trials(space)
    return {} if startup is None else {"n_startup_trials": startup}


PRUNERS.add("mo_asha", PrunerDef(
    lambda space, o: MultiObjectiveASHA(space.directions, min_resource=o["min_resource"],
                                        reduction_factor=o["reduction_factor"],
                                        n_startup_trials=o["n_startup_trials"], n_warmup_steps=o["n_warmup_steps"],
                                        keep_front=bool(o["keep_front"]), max_resource=space.budget.max_epochs),
    {"min_resource": Option(1, "the first rung: epochs every trial gets", low=1),
     "reduction_factor": Option(3, "keep the top 1/factor of the trials at each rung, ranked by Pareto dominance",
                                low=2),
     "n_startup_trials": Option(3, "trials finished before pruning starts (default: as many as the sampler's random "
                                   "start-up trials, e.g. tpe's n_startup_trials; 3 with a sampler that has none)"),
     "n_warmup_steps": Option(0, "no trial is pruned before this epoch"),
     "keep_front": Option(1, "1: a trial that no trial at its rung dominates goes on; 0: only the top 1/factor")},
    objectives="several",
    defaults=_after_sampler_startup,
))
PRUNERS.add("none", PrunerDef(lambda space, o: optuna.pruners.NopPruner(), objectives="any"))

# What a space without ``pruner:`` gets.
DEFAULT_PRUNER = "median"
DEFAULT_MULTI_OBJECTIVE_PRUNER = "mo_asha"


def default_pruner(n_objectives: int) -> str:
    return DEFAULT_MULTI_OBJECTIVE_PRUNER if n_objectives > 1 else DEFAULT_PRUNER


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


def pruner_options(space: SearchSpace, pruner: PrunerDef, given: Mapping[str, int]) -> dict[str, int]:
    """``pruner``'s options for ``space``: those ``given``, else the space-dependent default, else the registry's."""
    defaults = {k: o.default for k, o in pruner.options.items()} | dict(pruner.defaults(space))
    return {k: int(given.get(k, defaults[k])) for k in pruner.options}


def create_pruner(space: SearchSpace, enqueued: Callable[[optuna.trial.FrozenTrial], bool] | None = None
                  ) -> BasePruner:
    """The space's pruner; with ``enqueued`` (whether a trial came from the space's ``enqueue:``), one that
    never prunes those trials (single objective: the multi-objective pruner judges through
    search.study.intermediate, not ``should_prune``)."""
    name, given = space.pruner.name, space.pruner.options
    pruner = PRUNERS.get(name)
    if not pruner.fits(len(space.objectives)) and space.multi_objective:
        # A single-objective pruner named by a study with several objectives (Optuna cannot prune
        # those; such spaces used to train every trial in full): MO-ASHA, with the options both take.
        name = DEFAULT_MULTI_OBJECTIVE_PRUNER
        pruner = PRUNERS.get(name)
        kept = {k: v for k, v in given.items() if k in pruner.options}
        log.warning("pruner %s compares one objective; this study has %d, so it prunes with %s%s (name "
                    "pruner: %s or none in the space to choose)", space.pruner.name, len(space.objectives), name,
                    f" ({', '.join(f'{k}={v}' for k, v in kept.items())})" if kept else "", name)
        given = kept
    made = pruner.create(space, pruner_options(space, pruner, given))
    if space.enqueue and enqueued is not None and not space.multi_objective:
        return SparingEnqueued(made, enqueued)
    return made
