"""A worker rides out a database outage (issue 23 item 8, issue 27 item 4).

A PostgreSQL connection dropped in the middle of a trial (``pg_terminate_backend``, a server
restart) must not fail the trial: the worker keeps training, its writes and heartbeats are retried
on a fresh connection until ``--connect-timeout``, and the study's budget stays exact. Only an
outage longer than that makes the worker give up, with one line.

These tests restart their own throwaway server (tests/pgserver.py), never a shared one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import create_engine, exc as sa_exc, text
from sqlalchemy.engine import make_url

import pgserver
from conftest import running_trial
from search.storage import retry
from search.storage.backend import TrialLock, open_storage, rdb_backend
from search.storage.budget import claim_counted, used_budget
from search.storage.resolved import StudyStorage
from search.storage.owned import OwnedTrialsStorage
from test_distributed import LONG_TRIAL, PG_ENV, _assert_exact, _create, _SecretURL, _space, _study_name, _trials

CLI = [sys.executable, "-m", "search.cli"]


@pytest.fixture(scope="module")
def own_pg() -> Iterator[tuple[str, str]]:
    """(URL, data directory) of a server these tests may terminate, restart and stop."""
    base = tempfile.mkdtemp(prefix="strategy-search-pg-outage-", dir="/tmp")  # the postgres user must reach it
    try:
        url = pgserver.start(base)
    except (pgserver.ServerError, OSError, subprocess.SubprocessError) as exc:
        pgserver.stop(base)
        if os.environ.get(PG_ENV):  # CI has PostgreSQL: a server that cannot start is a failure there
            pytest.fail(f"no PostgreSQL server could be started for the outage tests: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server could be started here ({exc})")
    try:
        yield _SecretURL(url), base
    finally:
        pgserver.stop(base)


def _named(url: str, name: str) -> str:
    """``url`` whose connections show ``name`` in pg_stat_activity (to find the worker's backend)."""
    return _SecretURL(make_url(url).update_query_dict({"application_name": name}).render_as_string(
        hide_password=False))


def _backends(url: str, name: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                                     {"n": name}).scalars())
    finally:
        engine.dispose()


def _terminate(url: str, pids: list[int]) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for pid in pids:
                assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
            conn.commit()
    finally:
        engine.dispose()


def _long_study(workdir: Path, url: str, prefix: str, n_trials: int) -> str:
    study = _study_name(prefix)
    _create(_space(workdir, study, n_trials, max_epochs=25, params={
        "lr": {"float": [0.001, 0.05], "log": True}, **LONG_TRIAL}), url, workdir)
    return study


def _worker(study: str, url: str, workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "worker", study, "--storage", url, "--heartbeat", "1", *args],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def _whole(trials: list[optuna.trial.FrozenTrial]) -> None:
    """Every trial trained all its epochs (none was cut short by the outage) and reported each once."""
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, 26)), (t.number, sorted(t.intermediate_values))


# ----------------------------------------------------------------------------- whole workers, real outages


def test_a_terminated_connection_mid_trial_is_replaced_and_the_trial_completes(workdir: Path,
                                                                               own_pg: tuple[str, str]) -> None:
    url, _ = own_pg
    study = _long_study(workdir, url, "terminated", 3)
    name = f"victim-{study}"
    proc = _worker(study, _named(url, name), workdir, "--grace", "10")
    try:
        victim = running_trial(study, url, proc, max_epochs=10, claimed=True)
        pids = _backends(url, name)
        assert len(pids) == 1, pids  # one connection per worker process
        _terminate(url, pids)
    finally:
        output = _finish(proc)
    assert proc.returncode == 0, output
    assert "connection lost during" in output and "connection back after" in output, output
    assert "Traceback" not in output
    trials = _trials(study, url)
    _assert_exact(trials, 3)  # nothing failed, nothing created twice, the budget exact
    _whole(trials)
    assert next(t for t in trials if t.number == victim.number).state == TrialState.COMPLETE
    password = make_url(url).password
    assert password is None or password not in output


def test_a_postgresql_restart_mid_trial_loses_no_trial_and_no_budget(workdir: Path, own_pg: tuple[str, str]) -> None:
    url, base = own_pg
    study = _long_study(workdir, url, "restart", 4)
    proc = _worker(study, url, workdir, "--processes", "2", "--grace", "15", "--connect-timeout", "60")
    try:
        victim = running_trial(study, url, proc, max_epochs=10, claimed=True)
        pgserver.restart(base, down=2.0)  # every session terminated; connections refused for 2 s
    finally:
        output = _finish(proc)
    assert proc.returncode == 0, output
    assert "connection lost during" in output, output
    assert "Traceback" not in output
    trials = _trials(study, url)
    _assert_exact(trials, 4)
    _whole(trials)
    assert next(t for t in trials if t.number == victim.number).user_attrs["worker"] == victim.user_attrs["worker"]


def test_an_outage_longer_than_the_connect_timeout_ends_the_worker_with_one_line(workdir: Path,
                                                                                own_pg: tuple[str, str]) -> None:
    url, base = own_pg
    study = _long_study(workdir, url, "gone", 2)
    proc = _worker(study, url, workdir, "--grace", "10", "--connect-timeout", "3")
    stopped = threading.Event()
    try:
        victim = running_trial(study, url, proc, max_epochs=10, claimed=True)

        def down() -> None:  # the server stays down past the worker's connect timeout
            subprocess.run(pgserver._as_server_user([pgserver.find_bin("pg_ctl"), "-D", f"{base}/data", "-m",
                                                     "fast", "-w", "stop"]), capture_output=True, timeout=60)
            stopped.set()

        threading.Thread(target=down, daemon=True).start()
        output = _finish(proc, timeout=120)
    finally:
        assert stopped.wait(60)
        pgserver._start_server(Path(base))
    assert proc.returncode == 2, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: storage postgresql+psycopg://strategy:***@127.0.0.1:"), output
    assert "unreachable, gave up after 3s (raise it with --connect-timeout)" in last
    assert "Traceback" not in output
    password = make_url(url).password
    assert password is None or password not in output
    # The trial was not recorded as failed by its worker: it stays RUNNING until its heartbeat goes
    # stale, and a live worker then fails it and retries it with the same params.
    stored = next(t for t in _trials(study, url) if t.number == victim.number)
    assert stored.state == TrialState.RUNNING and "fail_reason" not in stored.user_attrs


# ----------------------------------------------------------------------------- replies lost after a commit


class _LostReply(sa_exc.OperationalError):
    def __init__(self) -> None:
        super().__init__("COMMIT", {}, Exception("server closed the connection unexpectedly"),
                         connection_invalidated=True)


def _lose_first_reply(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """``owner.<name>`` does its work (committed), then the first call raises as if the connection died
    before the reply came back."""
    real = getattr(owner, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) == 1:
            raise _LostReply()
        return result

    monkeypatch.setattr(owner, name, flaky)
    return calls


def test_a_finished_trial_whose_reply_was_lost_is_not_refused_on_retry(own_pg: tuple[str, str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = own_pg
    study = optuna.create_study(study_name=_study_name("lostreply"), storage=open_storage(url, connect_timeout=10))
    trial = study.ask()
    calls = _lose_first_reply(monkeypatch, RDBStorage, "set_trial_state_values")
    frozen = study.tell(trial, 0.5)
    assert len(calls) == 2  # tried again; the second try found the trial finished with exactly these values
    assert frozen.state == TrialState.COMPLETE and frozen.values == [0.5]
    stored = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    assert [(t.state, t.values) for t in stored] == [(TrialState.COMPLETE, [0.5])]


def test_a_counted_creation_whose_reply_was_lost_is_found_not_created_twice(own_pg: tuple[str, str],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = own_pg
    study = optuna.create_study(study_name=_study_name("lostcreate"), storage=open_storage(url, connect_timeout=10))
    lock = TrialLock(url, study.study_name)
    calls = _lose_first_reply(monkeypatch, OwnedTrialsStorage, "_create_counted")
    where = StudyStorage.of(study)
    first = claim_counted(where, 2, lock.advisory_key)
    assert len(calls) == 1  # the retry looked the committed trial up instead of creating another
    assert [t._trial_id for t in study.get_trials()] == [first]
    assert used_budget(where) == 1
    second = claim_counted(where, 2, lock.advisory_key)
    assert claim_counted(where, 2, lock.advisory_key) is None  # the budget of 2 is exact
    assert sorted(t.number for t in study.get_trials()) == [0, 1] and second != first
    lock.close()


def test_retried_writes_are_upserts_and_leave_one_row(own_pg: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fast write of an owned trial (param, report, attr, heartbeat), committed and then retried
    because its reply was lost, leaves the row once with the value written."""
    url, _ = own_pg
    study = optuna.create_study(study_name=_study_name("upsert"), storage=open_storage(url, connect_timeout=10))
    lock = TrialLock(url, study.study_name)
    earlier = study.ask()  # a param seen before is written in one statement (search.storage.owned)
    earlier.suggest_float("x", 0.0, 1.0)
    study.tell(earlier, 1.0)
    trial_id = claim_counted(StudyStorage.of(study), None, lock.advisory_key)
    backend = rdb_backend(study._storage)
    real = OwnedTrialsStorage._insert_if_running
    lost: list[str] = []

    def twice(self: OwnedTrialsStorage, tid: int, model: Any, **columns: Any) -> None:
        real(self, tid, model, **columns)
        if model.__tablename__ not in lost:  # the first write to each table "loses its reply"
            lost.append(model.__tablename__)
            raise _LostReply()

    monkeypatch.setattr(OwnedTrialsStorage, "_insert_if_running", twice)
    backend.start_trial(trial_id, {"worker": "me"}, heartbeat=True)
    trial = optuna.Trial(study, trial_id)
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.25, 1)
    trial.set_user_attr("note", "kept")
    assert sorted(lost) == ["trial_heartbeats", "trial_intermediate_values", "trial_params",
                            "trial_user_attributes"]
    stored = RDBStorage.get_trial(open_storage(url, heartbeat=False), trial_id)
    assert stored.intermediate_values == {1: 0.25}
    assert stored.user_attrs == {"worker": "me", "note": "kept"}
    assert stored.params == {"x": x}
    engine = create_engine(url)
    with engine.connect() as conn:
        beats = conn.execute(text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                             {"t": trial_id}).scalar_one()
    engine.dispose()
    assert beats == 1
    lock.close()


def test_a_lost_connection_is_retried_only_until_the_deadline() -> None:
    policy = retry.Retry(0.6, "postgresql+psycopg://u:***@127.0.0.1/db")
    tries: list[float] = []

    def down() -> None:
        tries.append(time.monotonic())
        raise _LostReply()

    started = time.monotonic()
    with pytest.raises(retry.Outage, match=r"unreachable, gave up after 0.6s .*server closed the connection"):
        policy(down, "a test")
    assert 0.6 <= time.monotonic() - started < 3
    assert len(tries) >= 3  # backoff: several tries, not one
    # Anything but a lost connection is raised at once, and a give-up is never retried by a caller.
    tries.clear()
    with pytest.raises(ValueError):
        policy(lambda: tries.append(1) or (_ for _ in ()).throw(ValueError("bad")), "a test")
    assert tries == [1]
    assert not retry.is_transient(retry.Outage("gave up"))
    assert not retry.is_transient(sa_exc.OperationalError("SELECT", {}, Exception(
        'FATAL: database "x" does not exist')))
    assert retry.is_transient(optuna.exceptions.StorageInternalError("wrapped").with_traceback(None)) is False
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = _LostReply()
    assert retry.is_transient(wrapped)  # Optuna re-raises SQLAlchemy's errors as StorageInternalError


def test_sqlite_storages_are_not_retried(workdir: Path) -> None:
    storage = open_storage(f"sqlite:///{workdir}/studies.db")
    assert not rdb_backend(storage).retry.enabled
