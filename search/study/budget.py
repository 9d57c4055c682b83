"""The study's used budget, counted by the database instead of by loading every trial.

A trial uses budget unless it is WAITING, a FAIL trial that was retried (its number is in
some trial's ``retry_history``), or a finished trial copied in by a warm start. On an RDB
storage a few aggregate queries give that count in time that does not grow with the number of
finished trials; other storages count the trials.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search import records
from search.records import is_copied
from search.study.storage import rdb_backend


def counted_trials(trials: list[FrozenTrial]) -> int:
    """Trials that use up budget: all but WAITING ones, FAIL trials that were retried and warm-start copies."""
    retried: set[int] = set()
    for t in trials:
        retried.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
    return sum(1 for t in trials if t.state != TrialState.WAITING and not is_copied(t)
               and not (t.state == TrialState.FAIL and t.number in retried))


def used_budget(study: optuna.Study) -> int:
    """:func:`counted_trials` of the study, with aggregate queries where the storage allows."""
    storage, study_id = records.storage_of(study), records.study_id(study)
    rdb = rdb_backend(storage)
    if rdb is not None:
        return _rdb_used(rdb, study_id)
    return counted_trials(storage.get_all_trials(study_id, deepcopy=False))


def _rdb_used(storage: RDBStorage, study_id: int) -> int:
    from optuna.storages._rdb import models
    from sqlalchemy import func, select

    trial = models.TrialModel
    with storage.engine.connect() as conn:
        by_state = dict(conn.execute(select(trial.state, func.count()).where(trial.study_id == study_id)
                                     .group_by(trial.state)).all())
        failed: set[int] = set()
        histories: list[Any] = []
        if by_state.get(TrialState.FAIL):
            failed = set(conn.execute(select(trial.number).where(
                trial.study_id == study_id, trial.state == TrialState.FAIL)).scalars())
            attr = models.TrialSystemAttributeModel
            histories = list(conn.execute(select(attr.value_json).join(trial, trial.trial_id == attr.trial_id).where(
                trial.study_id == study_id, attr.key == records.RETRY_HISTORY)).scalars())
        user = models.TrialUserAttributeModel
        copied = conn.execute(select(func.count()).select_from(user).join(trial, trial.trial_id == user.trial_id)
                              .where(trial.study_id == study_id, user.key == records.WARM_START)).scalar_one()
        conn.rollback()
    return (sum(n for state, n in by_state.items() if state != TrialState.WAITING)
            - len(failed & _numbers(histories)) - copied)


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``; on an RDB storage one query first says whether any trial is queued
    (WAITING: a retry or an enqueued trial, rare), so the usual case creates the trial without
    re-reading every running trial through Optuna's cache (work that grows with the workers)."""
    storage, study_id = records.storage_of(study), records.study_id(study)
    rdb = rdb_backend(storage)
    if rdb is None:
        return study.ask()
    from optuna.storages._rdb import models
    from sqlalchemy import select

    trial = models.TrialModel
    with rdb.engine.connect() as conn:
        queued = conn.execute(select(trial.trial_id).where(
            trial.study_id == study_id, trial.state == TrialState.WAITING).limit(1)).first()
        conn.rollback()
    if queued is not None:
        return study.ask()
    records.forget_cached_trials(study)  # as study.ask(): the sampler sees this trial's start
    return optuna.Trial(study, storage.create_new_trial(study_id))


def _numbers(histories: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for raw in histories:
        out.update(int(n) for n in json.loads(raw))
    return out
