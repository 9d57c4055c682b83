"""A worker's own running trials (search.storage.owned): read back without queries and equal to the
stored trial; a trial failed as stale elsewhere is read from the database again, never overwritten;
PostgreSQL counts the budget and creates the trial in one transaction under the study's lock."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search.study import runner
from search.storage.budget import NotCounted, claim_counted
from search.storage.resolved import StudyStorage
from search.storage.owned import OwnedTrialsStorage
from search.storage.backend import TrialLock, open_storage, rdb_backend
from test_distributed import _study_name, pg_url  # noqa: F401 - pg_url is a fixture


_READ = RDBStorage.get_trial


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, workdir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{workdir}/studies.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Trial ids read from the database by ``RDBStorage.get_trial`` (not from the local copy)."""
    reads: list[int] = []
    def counted(self: RDBStorage, trial_id: int) -> FrozenTrial:
        reads.append(trial_id)
        return _READ(self, trial_id)

    monkeypatch.setattr(RDBStorage, "get_trial", counted)
    yield reads


def _study(url: str, prefix: str) -> optuna.Study:
    return optuna.create_study(study_name=_study_name(prefix), storage=open_storage(url))


def _stored(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """The trial as the database has it (Optuna's read on a fresh storage; not counted in ``db_reads``)."""
    return _READ(open_storage(study._storage._backend.url, heartbeat=False), trial_id)


def _same(local: FrozenTrial, stored: FrozenTrial) -> None:
    for field in ("number", "state", "values", "datetime_start", "params", "distributions", "user_attrs",
                  "system_attrs"):
        assert getattr(local, field) == getattr(stored, field), field
    assert local.intermediate_values.keys() == stored.intermediate_values.keys()
    for step, value in local.intermediate_values.items():
        assert value == stored.intermediate_values[step] or (math.isnan(value) and math.isnan(stored.intermediate_values[step]))


def test_an_owned_trial_is_read_back_without_queries_and_equals_the_stored_trial(url: str, db_reads: list[int]) -> None:
    study = _study(url, "owned")
    trial = study.ask()
    backend = rdb_backend(study._storage)
    assert isinstance(backend, OwnedTrialsStorage) and backend.owns(trial._trial_id)
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("augment", ["none", ("flip", "crop")])
    trial.suggest_int("depth", 1, 4)
    for step, value in enumerate([0.5, float("nan"), 0.75]):
        trial.report(value, step)
    trial.set_user_attr("shape", (1, 2))  # a tuple comes back from the database as a list
    study._storage.set_trial_system_attr(trial._trial_id, "note", {"k": [1, 2]})
    local = study._storage.get_trial(trial._trial_id)
    assert db_reads == []  # all of the above read nothing back
    _same(local, _stored(study, trial._trial_id))
    local.params["lr"] = -1.0  # a caller's copy: changing it leaves the kept copy alone
    assert study._storage.get_trial(trial._trial_id).params["lr"] != -1.0

    told = runner._tell(study, trial, values=[0.75])
    assert db_reads == []  # tell read the trial back twice: both from the kept copy
    stored = _stored(study, trial._trial_id)
    assert told.state == stored.state == TrialState.COMPLETE and told.values == stored.values == [0.75]
    _same(told, stored)
    assert abs((told.datetime_complete - stored.datetime_complete).total_seconds()) < 1.0
    assert not backend.owns(trial._trial_id)  # finished: reads go to the database again
    study._storage.get_trial(trial._trial_id)
    assert db_reads == [trial._trial_id]


def test_the_first_heartbeat_and_worker_are_recorded_with_the_new_trial(url: str) -> None:
    study = _study(url, "start")
    storage = study._storage
    trial = runner._start(StudyStorage.of(study), storage.create_new_trial(study._study_id), beats=True)
    stored = _stored(study, trial._trial_id)
    assert stored.user_attrs["worker"] == runner.worker_id()
    from optuna.storages._rdb import models
    from sqlalchemy import func, select

    with rdb_backend(storage).engine.connect() as conn:
        beats = conn.execute(select(func.count()).select_from(models.TrialHeartbeatModel).where(
            models.TrialHeartbeatModel.trial_id == trial._trial_id)).scalar_one()
    assert beats == 1


@pytest.mark.parametrize("write_first", [True, False], ids=["writes-after", "tells-at-once"])
def test_a_trial_failed_as_stale_elsewhere_is_read_back_not_overwritten(url: str, db_reads: list[int],
                                                                       write_first: bool) -> None:
    study = _study(url, "stale")
    trial = study.ask()
    trial.report(0.5, 0)
    other = open_storage(url, heartbeat=False)  # another worker, which fails it for missed heartbeats
    other.set_trial_user_attr(trial._trial_id, "fail_reason", "lost: no heartbeat for 3 s")
    assert other.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if write_first:
        with pytest.raises(UpdateFinishedTrialError):
            trial.report(0.9, 1)
        with pytest.raises(UpdateFinishedTrialError):
            trial.set_user_attr("late", 1)
    told = runner._tell(study, trial, values=[0.9])  # the worker's own tell after the fact
    assert told.state == TrialState.FAIL and told.values is None
    assert db_reads  # the refusal dropped the kept copy: the stored FAIL trial was read
    stored = _stored(study, trial._trial_id)
    assert stored.state == TrialState.FAIL and stored.user_attrs.get("late") is None
    assert sorted(stored.intermediate_values) == [0]


# ----------------------------------------------------------------------------- PostgreSQL: counted creation


def _lock(study: optuna.Study, url: str) -> TrialLock:
    return TrialLock(url, study.study_name, engine=rdb_backend(study._storage).engine)


def test_counted_creation_keeps_the_budget_and_leaves_queued_trials_to_the_lock(pg_url: str) -> None:
    study = _study(pg_url, "counted")
    key = _lock(study, pg_url).advisory_key
    assert key is not None
    where = StudyStorage.of(study)
    first = claim_counted(where, 2, key)
    second = claim_counted(where, 2, key)
    assert first is not None and second is not None
    assert [t.number for t in study.get_trials()] == [0, 1]
    assert claim_counted(where, 2, key) is None  # used up: nothing created
    assert len(study.get_trials()) == 2
    study.enqueue_trial({"x": 1.0})
    with pytest.raises(NotCounted):  # a queued trial goes first, taken under the session lock
        claim_counted(where, 5, key)
    assert [t.state for t in study.get_trials()][-1] == TrialState.WAITING
    # SQLite has no such transaction: the caller takes the file lock instead.
    with pytest.raises(NotCounted):
        claim_counted(StudyStorage.of(optuna.create_study(storage=open_storage("sqlite:///:memory:"))), 2, key)


def test_counted_creation_waits_for_a_worker_holding_the_study_lock(pg_url: str) -> None:
    """The transaction's lock and the session lock of other workers (and the proxy) exclude each other."""
    study = _study(pg_url, "mixed")
    holder = _study(pg_url, "unused")  # another connection: a second worker's own storage
    lock = TrialLock(pg_url, study.study_name, engine=rdb_backend(holder._storage).engine)
    done: list[float] = []
    with lock.hold():
        started = time.monotonic()
        claimer = threading.Thread(target=lambda: (claim_counted(StudyStorage.of(study), 5, lock.advisory_key),
                                                   done.append(time.monotonic())))
        claimer.start()
        time.sleep(1.0)
        assert not done  # still waiting for the lock
    claimer.join(30)
    assert done and done[0] - started >= 1.0
    assert len(study.get_trials()) == 1


def _sleep_worker(pg_url: str, study: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from benchmarks.worker_scaling import run_worker_thread, sleep_objective
    from search.study.objective import Objective

    monkeypatch.setattr(runner, "Objective", sleep_objective(Objective, 0.0))
    return run_worker_thread(pg_url, study)


def test_a_worker_runs_an_enqueued_trial_first_then_creates_within_the_budget(
        workdir: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import tiny_space, write_space
    from search.space.parse import load_space
    from search.study.create import create_study

    name = _study_name("enq")
    space = load_space(write_space(workdir / "space.yaml", tiny_space(name, budget={"n_trials": 3, "max_epochs": 1})))
    study = create_study(space, pg_url)
    fixed = {"lr": 0.01}
    study.enqueue_trial(fixed, skip_if_exists=False)
    report = _sleep_worker(pg_url, name, monkeypatch)
    trials = optuna.load_study(study_name=name, storage=pg_url).get_trials()
    assert report["trials"] == 3 and [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params["lr"] == fixed["lr"]
