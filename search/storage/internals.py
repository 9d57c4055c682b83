"""Optuna's private names, read in one place: accessors the rest of the package calls.

Optuna exposes no public accessor for a Study's storage, its id, a trial's id, the study's
per-thread trial cache or an RDB storage's stale-trial query. These helpers reach for them; the
other uses of Optuna internals are in this package too (the table in :mod:`search.storage`).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial


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
