"""Crash recovery on the default storage (SQLite), as the docs promise it (docs/explanation/claiming.md):

* a single ``run`` killed outright (SIGKILL) mid-trial resumes with the same command: its trial is
  failed after the heartbeat's grace, with the reason, and retried with the same params;
* SIGTERM (``docker stop``) stops a single ``run`` like Ctrl-C: exit 130, the trial FAIL
  (interrupted) and queued again;
* a second Ctrl-C to a launcher kills its workers at once; nothing is lost: the next run fails
  their trials after the grace and retries them;
* a launcher killed outright takes its workers with it: each is sent SIGTERM and stops like Ctrl-C
  (no orphan keeps training).

(SIGKILL of one worker of a launcher, and Ctrl-C / SIGTERM to a launcher, on SQLite and
PostgreSQL: tests/test_distributed.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import FrozenTrial, TrialState

from conftest import running_trial
from search import records
from search.cli import main
from search.study.create import create_study
from search.space.parse import load_space
from test_distributed import CLI, FAST_HEARTBEAT, LONG_TRIAL, _report_counts, _space, _study_name, _trials

FAST_ENV = {"STRATEGY_SEARCH_HEARTBEAT": "1", "STRATEGY_SEARCH_GRACE": "3"}  # as FAST_HEARTBEAT, for `run`
PARAMS = {"lr": {"float": [0.001, 0.05], "log": True}, **LONG_TRIAL}


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)


def _run(space: Path, storage: str, workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "run", str(space), "--storage", storage], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **FAST_ENV})


def _assert_nothing_lost(trials: list[FrozenTrial], budget: int) -> None:
    """``budget`` COMPLETE trials; every FAIL one was retried exactly once, with the same params, and
    the retry completed; nothing RUNNING or WAITING is left."""
    by_number = {t.number: t for t in trials}
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for failed in (t for t in trials if t.state == TrialState.FAIL):
        [retry] = [t for t in trials if records.retry_of(t) == failed.number]
        assert retry.state == TrialState.COMPLETE and retry.params == failed.params
        assert retry.user_attrs["config"] == failed.user_attrs["config"]  # the seed too
    assert len(trials) == budget + sum(t.state == TrialState.FAIL for t in trials)
    assert sorted(by_number) == list(range(len(trials)))


def test_a_hard_killed_run_resumes_with_the_same_command(workdir: Path, fast_heartbeat: None) -> None:
    storage = f"sqlite:///{workdir}/studies.db"
    study = _study_name("hardkill")
    space = _space(workdir, study, 2, max_epochs=25, params=PARAMS)
    proc = _run(space, storage, workdir)
    try:
        victim = running_trial(study, storage, proc, max_epochs=8, claimed=True)
        proc.kill()  # SIGKILL: nothing in the process runs any more, its trial stays RUNNING
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    [left] = [t for t in _trials(study, storage) if t.number == victim.number]
    assert left.state == TrialState.RUNNING

    # The same command again (in this process): it runs the rest of the budget, waits for the dead
    # trial's heartbeat to go stale, fails it with the reason and runs its retry.
    result = CliRunner().invoke(main, ["run", str(space), "--storage", storage], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = _trials(study, storage)
    _assert_nothing_lost(trials, 2)
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == victim.number
    assert records.fail_reason(failed) == "worker lost: no heartbeat for 3 s"


def test_sigterm_stops_a_single_run_like_ctrl_c(workdir: Path) -> None:
    storage = f"sqlite:///{workdir}/studies.db"
    study = _study_name("term")
    space = _space(workdir, study, 2, max_epochs=25, params=PARAMS)
    proc = _run(space, storage, workdir)
    try:
        running = running_trial(study, storage, proc, max_epochs=8, claimed=True)
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends first
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert f"trial {running.number} was stopped mid-training: recorded FAIL (interrupted) and queued again" in output
    assert "Traceback" not in output
    trials = {t.number: t for t in _trials(study, storage)}
    assert trials[running.number].state == TrialState.FAIL
    assert records.fail_reason(trials[running.number]) == "interrupted"
    [queued] = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert queued.params == trials[running.number].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]


def test_a_second_ctrl_c_kills_the_workers_and_the_next_run_retries_their_trials(
        workdir: Path, fast_heartbeat: None) -> None:
    storage = f"sqlite:///{workdir}/studies.db"
    study = _study_name("twice")
    space = _space(workdir, study, 3, max_epochs=25, params=PARAMS)
    create_study(load_space(space), storage)
    launcher = subprocess.Popen([*CLI, "worker", study, "--storage", storage, "--processes", "2", *FAST_HEARTBEAT],
                                cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        running_trial(study, storage, launcher, max_epochs=8, claimed=True)
        launcher.send_signal(signal.SIGINT)
        # The second Ctrl-C once the launcher has forwarded the first (signals sent back to back can
        # merge into one): the workers are still recording their interrupted trials then.
        assert launcher.stdout is not None
        for line in launcher.stdout:
            lines.append(line)
            if "again kills them" in line:
                launcher.send_signal(signal.SIGINT)
                break
        output = "".join(lines) + launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, output
    assert "killing" in output and "killed by SIGKILL" in output, output
    assert len(_report_counts(output)) == 2

    # Running the study again finishes it: the killed workers' trials (left RUNNING) are failed once
    # their heartbeat is 3 s old and retried; any trial a worker managed to record as interrupted
    # before the kill is retried too.
    result = CliRunner().invoke(main, ["run", str(space), "--storage", storage], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = _trials(study, storage)
    _assert_nothing_lost(trials, 3)
    reasons = {records.fail_reason(t) for t in trials if t.state == TrialState.FAIL}
    assert "worker lost: no heartbeat for 3 s" in reasons and reasons <= {"worker lost: no heartbeat for 3 s",
                                                                         "interrupted"}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped
    except OSError:
        return True


def test_workers_stop_like_ctrl_c_when_their_launcher_is_killed(workdir: Path) -> None:
    storage = f"sqlite:///{workdir}/studies.db"
    study = _study_name("orphan")
    create_study(load_space(_space(workdir, study, 3, max_epochs=25, params=PARAMS)), storage)
    launcher = subprocess.Popen([*CLI, "worker", study, "--storage", storage, "--processes", "2", *FAST_HEARTBEAT],
                                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = running_trial(study, storage, launcher, max_epochs=8, claimed=True)  # type: ignore[arg-type]
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.kill()  # SIGKILL: the launcher cannot forward anything
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 120
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(pid) for pid in workers), "workers outlived their launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in _children(launcher.pid):
            os.kill(pid, signal.SIGKILL)
    trials = {t.number: t for t in _trials(study, storage)}
    assert trials[running.number].state == TrialState.FAIL
    assert records.fail_reason(trials[running.number]) == "interrupted"  # recorded by the worker itself
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    queued = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert running.params in [t.params for t in queued]


def test_the_launcher_runs_no_python_code_between_fork_and_exec(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher holds the gRPC client's threads when its storage is a proxy. A ``preexec_fn``
    (Python code in the forked child before exec) then aborted about 1 worker start in 60 with
    SIGABRT (gRPC's poller in the forked child found its epoll fd closed: 17 of 1,000 starts in a
    process holding a proxy client, 0 of 1,000 without it). A worker that never started left the
    dead worker's retry to nobody: the proxy kill test's flake. The workers set their parent-death
    signal themselves (``follow_launcher``, tested above)."""
    from search.study import workers

    seen: list[dict] = []

    class Recorded:
        pid, returncode = 4242, 0

        def __init__(self, cmd: list[str], **kwargs: object) -> None:
            seen.append(kwargs)

        def poll(self) -> int:
            return 0

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", Recorded)
    monkeypatch.setattr(workers, "_count_trials", lambda report, url: None)
    workers.launch("any", workers.plan_workers(processes=2), storage=f"sqlite:///{workdir}/s.db")
    assert len(seen) == 2
    assert all(kw.get("preexec_fn") is None and kw.get("start_new_session") for kw in seen), seen
    assert all(kw["env"][workers.LAUNCHER_PID_ENV] == str(os.getpid()) for kw in seen)  # type: ignore[index]
