"""Pruners by name: Hyperband whose sampler learns from every trial prunes exactly as Optuna's."""

from __future__ import annotations

import optuna
import pytest
from optuna.pruners import HyperbandPruner, _filter_study
from optuna.trial import TrialState, create_trial

from conftest import tiny_space
from search.core.errors import SpaceError
from search.algorithms.pruners import SharedHyperbandPruner, create_pruner
from search.space.parse import parse_space


def _pruner(**options: int) -> optuna.pruners.BasePruner:
    doc = tiny_space("prune", pruner={"name": "hyperband", "min_resource": 1, "reduction_factor": 3, **options},
                     budget={"n_trials": 40, "max_epochs": 9})
    return create_pruner(parse_space(doc))


def _study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The same 30 finished trials (curves of several speeds) under ``pruner``; same name, same brackets."""
    study = optuna.create_study(study_name="same", direction="maximize", pruner=pruner)
    for n in range(30):
        rate = 0.02 + 0.03 * ((n * 7) % 10)
        curve = {step: min(1.0, rate * step) for step in range(1, 10)}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=curve[9], intermediate_values=curve))
    return study


def test_shared_hyperband_prunes_as_optunas_but_its_sampler_sees_every_trial() -> None:
    shared, plain = _pruner(sampler_per_bracket=0), _pruner()
    assert isinstance(shared, SharedHyperbandPruner) and isinstance(plain, HyperbandPruner)
    a, b = _study(shared), _study(plain)
    decisions = []
    for n in range(30, 45):
        trials = []
        for study in (a, b):
            trial = study.ask()
            trial.report(0.05 * (n % 4), 1)
            trial.report(0.1 * (n % 4), 3)
            trials.append(study._storage.get_trial(trial._trial_id))
        assert trials[0].number == trials[1].number == n
        decisions.append(shared.prune(a, trials[0]))
        assert decisions[-1] == plain.prune(b, trials[1])
    assert any(decisions) and not all(decisions)  # the comparison covered both outcomes
    # What the sampler is given: every trial, against only the new trial's bracket.
    assert len(_filter_study(a, trials[0]).get_trials()) == len(a.get_trials())
    assert len(_filter_study(b, trials[1]).get_trials()) < len(b.get_trials())


def test_an_unknown_hyperband_option_names_the_allowed_ones() -> None:
    with pytest.raises(SpaceError, match="sampler_per_bracket"):
        _pruner(per_bracket=0)


def test_trials_enqueued_from_the_space_are_never_pruned() -> None:
    """The doctor's recipe and portfolio (and a user's enqueued configs) run whole: the median pruner
    that stops a poor new trial at epoch 2 leaves the same curve alone when the trial was enqueued."""
    from search import records

    doc = tiny_space("spare", pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                     enqueue=[{"lr": 0.01}])
    space = parse_space(doc)
    pruner = create_pruner(space, records.is_enqueued)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, intermediate_values={1: 0.8, 2: 0.9}))
    decisions = {}
    for enqueued in (False, True):
        trial = study.ask()
        if enqueued:
            for key, value in records.enqueued_attrs(0).items():
                trial.set_user_attr(key, value)
        trial.report(0.1, 1)
        trial.report(0.1, 2)
        decisions[enqueued] = trial.should_prune()
    assert decisions == {False: True, True: False}
    assert not isinstance(create_pruner(space), type(pruner))  # no predicate: the plain pruner
