"""Many workers on one study: one connection each, exact budget under contention, the gRPC
storage proxy (heartbeats, trial lock), prompt idle exit, and storage errors that fail at once.

Sleep trials (benchmarks.worker_scaling's objective: three reported epochs of sleep) keep the
workers cheap: they run as threads of this process, each a full worker through the library's
own loop (load_study + run_trials: its own storage, connection, trial lock and heartbeat).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from benchmarks.worker_scaling import run_worker_thread, sleep_objective
from conftest import free_port, running_trial
from search.space.parse import load_space
from search.study import runner
from search.study.objective import Objective
from search.study.runner import run_trials
from search.study.create import create_study
from search.study.load import load_study
from test_distributed import (CLI, FAST_HEARTBEAT, LONG_TRIAL, _assert_exact, _cli, _space, _study_name, _trials,
                              pg_url)  # noqa: F401 - pg_url is a fixture

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def sleepy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials sleep 3 x 0.1 s instead of training (the worker loop itself is unchanged)."""
    monkeypatch.setattr(runner, "Objective", sleep_objective(Objective, 0.3))


def _threads(n: int, url: str, study: str, together: bool = False) -> list[dict[str, Any]]:
    """``n`` workers as threads; with ``together``, none asks for a trial before all have loaded the study."""
    barrier = threading.Barrier(n, timeout=300) if together else None

    def one(_: int) -> dict[str, Any]:
        try:
            return run_worker_thread(url, study, gate=barrier.wait if barrier is not None else None)
        except BaseException:
            if barrier is not None:
                barrier.abort()  # the others stop waiting for a worker that failed to start
            raise

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@contextlib.contextmanager
def _role_with_connection_limit(url: str, limit: int) -> Iterator[str]:
    """A new login role that PostgreSQL lets hold at most ``limit`` connections at once (its
    ``CONNECTION LIMIT``: the server refuses connection ``limit + 1``), with the rights Optuna's
    tables need; yields ``url`` as that role. The ceiling is the server's own count at every
    connection, not a sample. Needs a URL whose role may create roles (tests/pgserver.py's does)."""
    from sqlalchemy import create_engine, text

    name, password = f"workers_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' NOSUPERUSER "
                              f"CONNECTION LIMIT {limit}"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {name}"))
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"))
            conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}"))
        yield make_url(url).set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"))
            conn.execute(text(f"DROP OWNED BY {name}"))
            conn.execute(text(f"DROP ROLE {name}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def proxy(workdir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """``strategy-search storage-proxy`` on 127.0.0.1 in front of a SQLite file or PostgreSQL (where
    it claims trials in one counted transaction): (grpc URL, database URL)."""
    db = f"sqlite:///{workdir}/behind-proxy.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with serving_proxy(db, workdir) as url:
        yield url, db


@contextlib.contextmanager
def serving_proxy(db: str, workdir: Path) -> Iterator[str]:
    """``strategy-search storage-proxy`` in front of ``db`` on a free loopback port, until the block
    ends: its grpc URL, once it answers."""
    port = free_port()
    proc = subprocess.Popen([*CLI, "storage-proxy", "--storage", db, "--port", str(port), "--heartbeat", "1",
                             "--grace", "3"], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"grpc://127.0.0.1:{port}"
    try:
        from search.storage.backend import open_storage

        open_storage(url, connect_timeout=60)  # waits until it answers
        yield url
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
        assert "Traceback" not in out, out


# ----------------------------------------------------------------------------- exact budget under contention


def test_32_workers_on_postgresql_exact_budget_one_connection_each(workdir: Path, pg_url: str, sleepy: None) -> None:
    study = _study_name("pg32")
    n = 64
    create_study(load_space(_space(workdir, study, n)), pg_url)
    # One connection per worker (the trial lock and the heartbeat share it), counted by the server:
    # the 32 workers' role may hold 32 connections at once, and a 33rd is refused (a worker error).
    # They start claiming together, once all 32 have loaded the study (and hold their connection).
    with _role_with_connection_limit(pg_url, 32) as workers_url:
        reports = _threads(32, workers_url, study, together=True)
    assert sum(r["trials"] for r in reports) == n
    _assert_exact(_trials(study, pg_url), n)
    assert all(r["trials"] >= 1 for r in reports), [r["trials"] for r in reports]  # all 32 took part


def test_budget_counted_by_query_matches_the_trials(workdir: Path) -> None:
    """The aggregate count agrees with counting loaded trials, retried failures included."""
    from search.storage.budget import counted_trials, used_budget
    from search.storage.heartbeat import requeue
    from search.storage.resolved import StudyStorage

    storage = f"sqlite:///{workdir}/studies.db"
    study = optuna.create_study(study_name="count", storage=storage)
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    requeue(study, study.trials[failed.number])  # trial 4 WAITING: 3 uses no budget, 4 none until it runs
    retry = study.ask()  # pops the retry (4), which fails again: it counts, 3 still does not
    assert retry.number == 4
    study.tell(retry, state=TrialState.FAIL)
    study.ask()  # 5, running
    assert used_budget(StudyStorage.of(study)) == counted_trials(study.get_trials(deepcopy=False)) == 5
    requeue(study, study.trials[4])  # 6 WAITING: now 4 is retried too
    assert used_budget(StudyStorage.of(study)) == counted_trials(study.get_trials(deepcopy=False)) == 4


# ----------------------------------------------------------------------------- idle workers, storage errors


def test_idle_worker_notices_promptly_that_the_last_trial_ended(workdir: Path, sleepy: None) -> None:
    """A worker with no budget left waits for the others' running trials, then leaves within a second."""
    storage = f"sqlite:///{workdir}/studies.db"
    study_name = _study_name("idle")
    create_study(load_space(_space(workdir, study_name, 1)), storage)  # default heartbeat: 10 s
    handle, spec = load_study(study_name, storage)
    other = handle.ask()  # another worker's running trial, with its heartbeat
    other.set_user_attr("worker", "elsewhere:1")
    handle._storage.record_heartbeat(other._trial_id)
    done: list[float] = []
    waiter = threading.Thread(target=lambda: (run_trials(*load_study(study_name, storage)),
                                              done.append(time.monotonic())))
    waiter.start()
    time.sleep(2.0)
    assert not done  # still waiting for the other worker's trial
    handle.tell(other, 0.5)
    ended = time.monotonic()
    waiter.join(timeout=30)
    assert done and done[0] - ended < 2.0, done and done[0] - ended  # was up to the heartbeat interval (10 s)


def test_a_file_that_is_not_a_database_fails_at_once(workdir: Path) -> None:
    (workdir / "notes.db").write_text("these are my notes, not a database\n" * 100)
    started = time.monotonic()
    result = _cli("worker", "any", "--storage", f"sqlite:///{workdir}/notes.db", cwd=workdir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: storage sqlite:///{workdir}/notes.db: file is not a database"]
    assert time.monotonic() - started < 20  # not retried for the connect timeout (30 s)


def test_bad_grpc_urls_are_one_line_errors(workdir: Path) -> None:
    result = _cli("worker", "any", "--storage", "grpc://127.0.0.1", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: storage URL 'grpc://127.0.0.1' is not valid; use grpc://HOST:PORT (a strategy-search storage-proxy)"]
    result = _cli("worker", "any", "--storage", f"grpc://127.0.0.1:{free_port()}", "--connect-timeout", "1",
                  cwd=workdir)
    assert result.returncode == 2
    assert "unreachable, gave up after 1s" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- through the gRPC storage proxy


def test_workers_through_the_proxy_run_exactly_the_budget(workdir: Path, proxy: tuple[str, str],
                                                           sleepy: None) -> None:
    url, db = proxy
    study = _study_name("proxy")
    create_study(load_space(_space(workdir, study, 24)), url)
    reports = _threads(8, url, study)
    assert sum(r["trials"] for r in reports) == 24
    _assert_exact(_trials(study, db), 24)


# Once a flake (a rerun hid it), two causes, both fixed: the surviving worker never started (the
# launcher's preexec_fn aborted it under gRPC: tests/test_crash_recovery.py), or it looked between
# the proxy failing the trial and queueing its retry, and left (tests/test_lost_trials.py).
def test_killed_worker_behind_the_proxy_is_failed_with_reason_and_retried(workdir: Path,
                                                                          proxy: tuple[str, str]) -> None:
    url, db = proxy
    study = _study_name("proxykill")
    space = _space(workdir, study, 3, max_epochs=25, params={
        "lr": {"float": [0.001, 0.05], "log": True}, "batch_size": {"choices": [32, 64]}, **LONG_TRIAL})
    create_study(load_space(space), url)
    env = {k: v for k, v in os.environ.items() if k != "STRATEGY_SEARCH_STORAGE"}
    launcher = subprocess.Popen([*CLI, "worker", study, "--storage", url, "--processes", "2", *FAST_HEARTBEAT],
                                cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        victim = running_trial(study, db, launcher, max_epochs=8, claimed=True)
        os.kill(int(victim.user_attrs["worker"].split(":")[1].split()[0]), signal.SIGKILL)
        output = launcher.communicate(timeout=200)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1 and "killed by SIGKILL" in output, output
    trials = sorted(_trials(study, db), key=lambda t: t.number)
    failures = [t for t in trials if t.state == TrialState.FAIL]
    if len(failures) != 1:
        print(output)  # whole, not cut by the assertion message
    assert len(failures) == 1, ([(t.number, t.state.name, t.user_attrs.get("fail_reason"), t.user_attrs.get("worker"),
                                  t.system_attrs) for t in trials], output)
    failed = failures[0]
    assert failed.number == victim.number
    assert failed.user_attrs["fail_reason"] == "worker lost: no heartbeat for 3 s"
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert "fail_reason" not in retry.user_attrs
    assert len(trials) == 4 and sum(t.state == TrialState.COMPLETE for t in trials) == 3
