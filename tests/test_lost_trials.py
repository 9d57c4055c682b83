"""Nothing is lost when a worker dies: the races between failing a dead worker's trial, queueing its
retry and the workers that wait for it.

The storage proxy fails a dead worker's trial itself; the workers behind it only wait. A waiting
worker leaves when it finds the budget used up and nothing running. A failed trial that is not yet
retried uses budget and does not run, so if anyone ever saw the trial failed before its retry was
queued, a waiting worker could leave right then and the retry, queued a moment later, waited for a
worker that never came (one of two causes of tests/test_scaling.py's proxy kill test flake; the
other: tests/test_crash_recovery.py, a worker aborted at its start).

The gap between the two writes was milliseconds; these tests make it long on purpose, at the
database: after a transaction that sets a trial FAIL commits, the failing connection's next
statement stalls. Failing and queueing in one transaction leaves no gap to stretch.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event, text

from conftest import tiny_space, write_space
from search import records
from search.space.parse import load_space
from search.storage import internals
from search.storage.backend import open_storage, rdb_backend
from search.storage.budget import running_with_worker, usage
from search.storage.heartbeat import fail_and_retry, fail_stale
from search.storage.proxy import ProxyBackend
from search.storage.resolved import StudyStorage
from search.study import runner
from search.study.create import create_study
from search.study.load import load_study
from search.study.objective import Objective
from benchmarks.worker_scaling import sleep_objective
from test_distributed import _study_name, pg_url  # noqa: F401 - pg_url is a fixture

STALL = 1.5  # seconds the failing connection waits after committing a FAIL (a loaded machine, exaggerated)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(workdir: Path, request: pytest.FixtureRequest) -> str:
    return f"sqlite:///{workdir}/lost.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _stall_after_fail_commit(engine: Any, seconds: float) -> None:
    """After a transaction that set some trial FAIL commits on ``engine``, its connection's next
    statement first sleeps ``seconds``."""

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if conn.info.pop("stall", False):
            time.sleep(seconds)
        if re.match(r"\s*UPDATE trials SET state", statement) and "FAIL" in str(params):
            conn.info["failing"] = True

    def commit(conn: Any) -> None:
        if conn.info.pop("failing", False):
            conn.info["stall"] = True

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", commit)


def _dead_workers_trial(study_name: str, url: str, beat_ago: int = 60) -> int:
    """A RUNNING trial claimed by a worker that has since died: its last heartbeat ``beat_ago`` s ago."""
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trial = study.ask()
    trial.suggest_float("lr", 0.001, 0.05, log=True)
    records.record_worker(trial, "elsewhere:4242")
    storage.record_heartbeat(internals.trial_id(trial))
    old = (f"now() - interval '{beat_ago} seconds'" if url.startswith("postgresql")
           else f"datetime('now', '-{beat_ago} seconds')")
    with storage.engine.begin() as conn:
        conn.execute(text(f"UPDATE trial_heartbeats SET heartbeat = {old} WHERE trial_id = :t"), {"t": internals.trial_id(trial)})
    storage.engine.dispose()
    return trial.number


@pytest.fixture
def proxy_backend(db: str) -> Iterator[ProxyBackend]:
    """The storage proxy's database side, in this process (what ``storage-proxy`` serves over gRPC)."""
    backend = open_storage(db, heartbeat_interval=1, grace_period=2, rdb_class=ProxyBackend, pool_size=4)
    assert isinstance(backend, ProxyBackend)
    backend._proxy_setup(db, optuna.storages.get_storage(backend))  # the cache it answers from
    yield backend
    backend.engine.dispose()


def test_a_worker_waiting_behind_the_proxy_gets_the_dead_workers_retry(workdir: Path, db: str,
                                                                        proxy_backend: ProxyBackend) -> None:
    """The whole budget (1 trial) is a dead worker's RUNNING trial; one worker waits for it. The
    proxy's stale check fails it (slowly). The waiting worker must end up claiming the retry, never
    leave: "budget used up", then "nothing running", then "nothing to claim" must not happen while
    a retry is due. (The claim after "nothing running" closes the case where the trial was failed
    and its retry queued between the first claim and the count: seen once in a full suite run.)"""
    name = _study_name("lost")
    create_study(load_space(write_space(workdir / "lost.yaml", tiny_space(name, budget={"n_trials": 1}))), db)
    dead = _dead_workers_trial(name, db)
    _stall_after_fail_commit(proxy_backend.engine, STALL)
    study_id = proxy_backend.get_study_id_from_name(name)
    observer_storage = open_storage(db, heartbeat=False)
    observer = StudyStorage.of(optuna.load_study(study_name=name, storage=observer_storage))

    checker = threading.Thread(target=proxy_backend.fail_stale_everywhere)
    checker.start()
    seen: list[tuple[int, int, int]] = []
    claimed = None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            # What a waiting worker does twice a second (search.study.runner.run_trials): claim through
            # the proxy; if nothing comes, count the other workers' running trials; when there are
            # none, claim once more (a trial may have stopped in between) and leave if that finds
            # nothing either.
            claimed = proxy_backend._claim(study_id, 1)
            if claimed is not None:
                break
            running = running_with_worker(observer)
            seen.append((*usage(observer), running))
            if running == 0:
                claimed = proxy_backend._claim(study_id, 1)
                assert claimed is not None, f"a waiting worker would leave here, the retry of trial {dead} unrun: {seen}"
                break
            time.sleep(0.02)
    finally:
        checker.join()
        observer_storage.engine.dispose()
    assert claimed is not None, seen
    trials = {t.number: t for t in optuna.load_study(study_name=name, storage=db).get_trials(deepcopy=False)}
    retry = next(t for t in trials.values() if internals.trial_id(t) == claimed)
    assert trials[dead].state == TrialState.FAIL and records.fail_reason(trials[dead]).startswith("worker lost")
    assert records.retry_history(retry) == [dead] and retry.state == TrialState.RUNNING
    assert retry.params == trials[dead].params
    assert len(trials) == 2


def test_two_workers_failing_the_same_stale_trial_queue_one_retry(workdir: Path, db: str) -> None:
    """Two waiting workers run the stale check at the same moment (each does, once per heartbeat
    interval, on SQLite and PostgreSQL alike). Both read the trial RUNNING before either writes:
    only one may fail it and queue the retry, or the study runs one trial more than its budget."""
    name = _study_name("twice")
    create_study(load_space(write_space(workdir / "twice.yaml", tiny_space(name, budget={"n_trials": 1}))), db)
    dead = _dead_workers_trial(name, db)
    studies = [optuna.load_study(study_name=name, storage=open_storage(db, heartbeat_interval=1, grace_period=2))
               for _ in range(2)]
    # Each worker pauses after every read of the trial by id until the other has read it too (or
    # 0.5 s passed): both have seen it RUNNING before either writes its state. (Before failing was
    # one compare-and-set transaction, SQLite then queued two retries.)
    barrier = threading.Barrier(2, timeout=0.5)
    by_id = re.compile(r"FROM trials\s+WHERE trials\.trial_id = ", re.S)

    def pause(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if by_id.search(statement):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                barrier.reset()

    for study in studies:
        event.listen(rdb_backend(internals.storage_of(study)).engine, "after_cursor_execute", pause)
    failed = [0, 0]

    def run(i: int) -> None:
        failed[i] = fail_stale(StudyStorage.of(studies[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for study in studies:
        rdb_backend(internals.storage_of(study)).engine.dispose()
    trials = optuna.load_study(study_name=name, storage=db).get_trials(deepcopy=False)
    retries = [t for t in trials if records.retry_history(t) == [dead]]
    assert sorted(failed) == [0, 1], failed
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING, [(t.number, t.state.name) for t in trials]


def test_a_worker_that_sees_nothing_running_claims_once_more_before_it_leaves(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker loop's own order: a claim finds the budget used up (a dead worker's trial still
    RUNNING), then the count of running trials finds none, because in between the trial was failed
    and its retry queued (in one step). Leaving then would strand the retry; the worker claims once
    more and runs it. The moment is forced: the count itself fails the trial first."""
    url = f"sqlite:///{workdir}/lost.db"
    name = _study_name("between")
    create_study(load_space(write_space(workdir / "b.yaml", tiny_space(name, budget={"n_trials": 1}))), url)
    dead = _dead_workers_trial(name, url, beat_ago=0)  # not stale yet for the worker's own check
    monkeypatch.setattr(runner, "Objective", sleep_objective(Objective, 0.3))
    count = runner.running_with_worker

    def count_after_the_trial_stopped(where: StudyStorage) -> int:
        [trial] = where.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) or [None]
        if trial is not None:
            assert fail_and_retry(where, trial, "worker lost: no heartbeat for 2 s")
        return count(where)

    monkeypatch.setattr(runner, "running_with_worker", count_after_the_trial_stopped)
    study, space = load_study(name, url)
    summary = runner.run_trials(study, space)
    assert summary.total == 1, summary  # it ran the retry instead of leaving
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    [retry] = [t for t in trials if records.retry_history(t) == [dead]]
    assert retry.state == TrialState.COMPLETE and len(trials) == 2
