"""Optuna's private names, read in one place: accessors the rest of the package calls.

Optuna exposes no public accessor for a Study's storage, its id, a trial's id, the study's
per-thread trial cache or an RDB storage's stale-trial query. These helpers reach for them; the
other uses of Optuna internals are in this package too (the table in :mod:`search.storage`).
"""

from __future__ import annotations

from typing import Any, Container

import optuna
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage. Optuna (5.0) has no public accessor for a Study's storage; this is the
    one place we reach for it."""
    return study._storage


def study_id(study: Any) -> int:
    """The id in its storage of a Study (or of a FrozenStudy from ``storage.get_all_studies()``):
    the key of BaseStorage's study methods, which Optuna exposes on neither."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage: the key of BaseStorage's trial methods, which neither
    ``optuna.Trial`` nor ``FrozenTrial`` exposes publicly."""
    return trial._trial_id


def forget_cached_trials(study: optuna.Study) -> None:
    """Drop the study's per-thread trial cache, as ``study.ask()`` does before it creates a trial."""
    study._thread_local.cached_all_trials = None


def lists_stale_trials(storage: optuna.storages.BaseStorage) -> bool:
    """Whether ``storage`` can list trials whose heartbeat stopped (RDB and our proxy can)."""
    return hasattr(storage, "_get_stale_trial_ids")


def stale_trial_ids(storage: optuna.storages.BaseStorage, study: Any) -> list[int]:
    """Ids of ``study``'s running trials whose heartbeat stopped (Optuna's fail_stale_trials reads the same)."""
    return storage._get_stale_trial_ids(study_id(study))  # type: ignore[attr-defined]


class WithoutPruned:
    """``study`` as a sampler sees it when it should learn from finished evaluations only: every
    trial listing (``get_trials``, ``trials`` and the ``_get_trials`` Optuna's samplers call) leaves
    the PRUNED trials out; everything else is the study itself."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self.study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        return self.study._get_trials(deepcopy=deepcopy, states=_unpruned(states), use_cache=use_cache)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=deepcopy, states=_unpruned(states))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def without_pruned(study: optuna.Study) -> Any:
    """:class:`WithoutPruned` of ``study`` (what ``search.algorithms.samplers.learning_from`` passes its sampler)."""
    return WithoutPruned(study)


def _unpruned(states: Container[TrialState] | None) -> tuple[TrialState, ...]:
    return tuple(s for s in TrialState if s != TrialState.PRUNED and (states is None or s in states))
