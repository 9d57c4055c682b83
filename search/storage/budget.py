"""The study's used budget, counted by the database instead of by loading every trial.

A trial uses budget unless it is WAITING, a FAIL trial that was retried (its number is in
some trial's ``retry_history``), or a finished trial copied in by a warm start. On an RDB
storage a few aggregate queries give that count in time that does not grow with the number of
finished trials; other storages count the trials. Each function takes the study's storage resolved
once (:class:`~search.storage.resolved.StudyStorage`), not the study: nothing here looks the storage up again.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search import records
from search.records import is_copied
from search.storage import internals, retry
from search.storage.owned import OwnedTrialsStorage
from search.storage.backend import claim_number
from search.storage.resolved import StudyStorage


def counted_trials(trials: list[FrozenTrial]) -> int:
    """Trials that use up budget: all but WAITING ones, FAIL trials that were retried and warm-start copies."""
    retried: set[int] = set()
    for t in trials:
        retried.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
    return sum(1 for t in trials if t.state != TrialState.WAITING and not is_copied(t)
               and not (t.state == TrialState.FAIL and t.number in retried))


def used_budget(where: StudyStorage) -> int:
    """:func:`counted_trials` of the study, with aggregate queries where the storage allows."""
    return usage(where)[0]


def usage(where: StudyStorage) -> tuple[int, int]:
    """The study's used budget and how many trials are queued (WAITING), from one read."""
    if where.rdb is not None:
        return rdb_usage(where.rdb, where.study_id)
    trials = where.front.get_all_trials(where.study_id, deepcopy=False)
    return counted_trials(trials), sum(1 for t in trials if t.state == TrialState.WAITING)


def rdb_usage(storage: RDBStorage, study_id: int) -> tuple[int, int]:
    """:func:`usage` of the study ``study_id`` of an RDB storage (the storage proxy counts this way)."""
    # One statement (one snapshot, one round trip, no transaction to open and close): this runs
    # inside the study's trial lock, where every round trip holds up the other workers.
    def read() -> tuple[int, int, int]:
        with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return _usage_on(conn, study_id)

    used, queued, _ = retry.call(getattr(storage, "retry", None), read, "counting the budget")
    return used, queued


def _usage_on(conn: Any, study_id: int) -> tuple[int, int, int]:
    """Used budget, queued trials and all trials of the study, read on ``conn``."""
    from optuna.storages._rdb import models
    from sqlalchemy import select

    trial = models.TrialModel

    def count(*where: Any, attr: str | None = None) -> Any:
        return _count(study_id, *where, attr=attr).scalar_subquery()

    started, queued, fail, copied = conn.execute(select(
        count(trial.state != TrialState.WAITING), count(trial.state == TrialState.WAITING),
        count(trial.state == TrialState.FAIL), count(attr=records.WARM_START))).one()
    retried = 0
    if fail:  # rare: only then read which failed trials were retried
        attr = models.TrialSystemAttributeModel
        failed = set(conn.execute(select(trial.number).where(
            trial.study_id == study_id, trial.state == TrialState.FAIL)).scalars())
        histories = conn.execute(select(attr.value_json).join(trial, trial.trial_id == attr.trial_id).where(
            trial.study_id == study_id, attr.key == records.RETRY_HISTORY)).scalars()
        retried = len(failed & _numbers(histories))
    return started - retried - copied, queued, started + queued


class _UsedUp(Exception):
    """The budget is used up: create nothing."""


class _Queued(Exception):
    """Queued trials come first: take one (under the study's lock) instead of creating one."""


def claim_counted(where: StudyStorage, total: int | None, lock_key: int | None) -> int | None:
    """On PostgreSQL, count the budget and create the next trial in one transaction under the
    study's lock (:meth:`~search.storage.owned.OwnedTrialsStorage.counted_creation`): the new trial's
    id, None when the budget is used up. Raises :class:`NotCounted` where this does not apply
    (see :attr:`StudyStorage.counts_in_transaction`; or queued trials to take first): the caller
    takes the lock and calls :func:`ask`.
    """
    backend = where.owned
    if lock_key is None or backend is None or not where.counts_in_transaction:
        raise NotCounted("not a PostgreSQL storage")
    internals.forget_cached_trials(where.study)  # as study.ask(): the sampler sees this trial's start
    return create_counted(where.front, backend, where.study_id, total, lock_key)


def create_counted(front: BaseStorage, backend: OwnedTrialsStorage, study_id: int, total: int | None,
                   lock_key: int) -> int | None:
    """:func:`claim_counted` on a storage ``front`` (Optuna's cache, which must see the new trial)
    over ``backend``; the storage proxy claims for its workers this way."""

    def check(conn: Any) -> int:
        used, queued, trials = _usage_on(conn, study_id)
        if total is not None and used >= total:
            raise _UsedUp
        if queued:
            raise _Queued
        return trials

    try:
        with backend.counted_creation(lock_key, check):
            return front.create_new_trial(study_id)
    except _UsedUp:
        return None
    except _Queued:
        raise NotCounted("queued trials") from None


class NotCounted(Exception):
    """:func:`claim_counted` does not apply here."""


def ask(where: StudyStorage, queued: int) -> optuna.Trial | int:
    """Start the next trial; call it holding the study's trial lock, with :func:`usage`'s ``queued``.

    A queued trial (a retry or an enqueued one, rare) is taken with ``study.ask()``. Otherwise, on an
    RDB storage, only the trial row is created here and its id returned: :func:`open_trial` builds the
    ``optuna.Trial`` (which reads the trial back) after the lock is released, and nothing re-reads
    every running trial through Optuna's cache (work that grows with the workers).
    """
    if queued or where.rdb is None:
        return where.study.ask()
    internals.forget_cached_trials(where.study)  # as study.ask(): the sampler sees this trial's start
    return where.front.create_new_trial(where.study_id)


def claim_through_proxy(where: StudyStorage, total: int | None) -> int | None:
    """One call to a storage proxy, which counts the budget, takes a queued trial or creates one and
    records its first heartbeat under the study's lock (:mod:`search.storage.proxy`): the new trial's
    id, or None when the budget is used up."""
    try:
        return where.front.get_trial_id_from_study_id_trial_number(where.study_id, claim_number(total))
    except KeyError:
        return None


def open_trial(where: StudyStorage, asked: optuna.Trial | int) -> optuna.Trial:
    """The ``optuna.Trial`` of what :func:`ask` returned."""
    return asked if isinstance(asked, optuna.Trial) else optuna.Trial(where.study, asked)


def running_with_worker(where: StudyStorage) -> int:
    """RUNNING trials started by a worker of ours (they have heartbeats, so they end or go stale)."""
    rdb, study_id = where.rdb, where.study_id
    if rdb is None:
        running = where.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return sum(1 for t in running if records.worker(t) is not None)
    from optuna.storages._rdb import models

    # One count instead of loading every running trial: idle workers ask this every half second.
    def read() -> int:
        with rdb.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(_count(study_id, models.TrialModel.state == TrialState.RUNNING,
                                       attr=records.WORKER)).scalar_one()

    return int(retry.call(getattr(rdb, "retry", None), read, "counting running trials"))


def _count(study_id: int, *where: Any, attr: str | None = None) -> Any:
    """``SELECT count(*)`` of the study's trials matching ``where`` (with user attr ``attr``, if given)."""
    from optuna.storages._rdb import models
    from sqlalchemy import func, select

    trial, user = models.TrialModel, models.TrialUserAttributeModel
    query = select(func.count()).select_from(trial)
    if attr is not None:
        query = select(func.count()).select_from(user).join(trial, trial.trial_id == user.trial_id)
        where = (*where, user.key == attr)
    return query.where(trial.study_id == study_id, *where)


def _numbers(histories: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for raw in histories:
        out.update(int(n) for n in json.loads(raw))
    return out
