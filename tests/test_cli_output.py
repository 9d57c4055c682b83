"""What a user sees: objective names in the study, Ctrl-C, quiet reports, and each command's last lines."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from conftest import free_port, running_trial, tiny_space, write_space
from search.tools import report
from search.cli import main
from search.space.parse import parse_space
from search.records import SPACE as SPACE_ATTR

CLI = [sys.executable, "-m", "search.cli"]
STORAGE = "sqlite:///studies.db"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _quick(study: str, n_trials: int = 2, **overrides: Any) -> dict[str, Any]:
    return tiny_space(study, budget={"n_trials": n_trials, "max_epochs": 1}, dataset={"name": "digits", "limit": 300},
                      **overrides)


def test_objective_names_are_the_studys_metric_names(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", _quick("named", 1))
    _invoke("run", str(space))
    assert optuna.load_study(study_name="named", storage=STORAGE).metric_names == ["accuracy"]

    # A study created without names (an older version): the first worker that joins names it.
    doc = _quick("old", 1, objective=["accuracy", "latency_ms"])
    old = optuna.create_study(study_name="old", storage=STORAGE, directions=["maximize", "minimize"])
    old.set_user_attr(SPACE_ATTR, doc)
    assert old.metric_names is None
    out = _invoke("worker", "old")
    assert optuna.load_study(study_name="old", storage=STORAGE).metric_names == ["accuracy", "latency_ms"]
    assert "worker done: 1 trial(s)" in out and "study 'old' now: complete 1" in out
    assert "see the best:  strategy-search best old" in out


def test_ctrl_c_during_run_says_what_happened_and_exits_130(workdir: Path) -> None:
    # Trials of ~0.1 s per epoch for 60 epochs: caught mid-training even on a loaded machine.
    doc = _quick("stop", 3, params={"lr": {"float": [0.001, 0.05], "log": True}, "width": 16, "input_size": 32,
                                    "depth": 2, "epochs": 60})
    doc["budget"]["max_epochs"] = 60
    space = write_space(workdir / "space.yaml", doc)
    proc = subprocess.Popen([*CLI, "run", str(space)], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        running = running_trial("stop", STORAGE, proc, max_epochs=29, poll=0.2).number
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal does
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "Aborted!" not in output and "Traceback" not in output, output
    assert "interrupted after" in output and "this process finished" in output
    assert f"trial {running} was stopped mid-training: recorded FAIL (interrupted) and queued again" in output
    assert "study 'stop' keeps every finished trial: run the same command again to resume it" in output
    trials = optuna.load_study(study_name="stop", storage=STORAGE).trials
    assert [t.state for t in trials if t.number == running] == [TrialState.FAIL]
    assert any(t.state == TrialState.WAITING and t.system_attrs["retry_history"] == [running] for t in trials)


def test_report_is_quiet_about_numeric_looking_choices_unless_verbose(workdir: Path) -> None:
    doc = _quick("quiet", 3, params={"lr": {"float": [0.001, 0.05], "log": True},
                                     "batch_size": {"choices": [32, 64]}, "width": 4})
    space = write_space(workdir / "space.yaml", doc)
    _invoke("run", str(space))
    quiet = subprocess.run([*CLI, "report", "quiet", "-o", "r.html"], cwd=workdir, capture_output=True, text=True,
                           timeout=240)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr  # no library warnings or log lines
    assert f"open it in a browser (works offline): {(workdir / 'r.html').as_uri()}" in quiet.stdout
    # With -v the libraries' notes come through (so the quiet run above had something to hide).
    verbose = subprocess.run([*CLI, "-v", "report", "quiet", "-o", "r.html", "--no-png", "--force"], cwd=workdir,
                             capture_output=True, text=True, timeout=240)
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr != ""


@pytest.mark.parametrize("objectives,values,best", [
    (["accuracy"], [0.5, 0.7, 0.6, 0.9], [0.5, 0.7, 0.7, 0.9]),
    (["latency_ms", "accuracy"], [3.0, 4.0, 2.0, 2.5], [3.0, 3.0, 2.0, 2.0]),  # the first objective, minimized
])
def test_history_has_a_best_so_far_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objectives: list[str],
                                        values: list[float], best: list[float]) -> None:
    space = parse_space(_quick("history", objective=objectives))
    study = optuna.create_study(directions=space.directions)
    dist = optuna.distributions.FloatDistribution(0.001, 0.05, log=True)
    for i, v in enumerate(values):
        study.add_trial(optuna.create_trial(params={"lr": 0.01 + i / 1000}, distributions={"lr": dist},
                                            values=[v, 0.5][:len(objectives)]))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"lr": 0.01}, distributions={"lr": dist}))
    sec = report.build_section("history", report.StudyView(study, space))
    drawn_traces = [t for t in sec.figure.data if len(t.y)]  # (Optuna adds an empty "Infeasible Trial" trace)
    assert len(drawn_traces) == 2
    values_trace, line = drawn_traces
    assert list(values_trace.y) == values
    assert line.mode == "lines" and list(line.x) == [0, 1, 2, 3] and list(line.y) == best
    assert line.name == f"best {objectives[0]} so far"

    drawn: list[Any] = []
    monkeypatch.setattr(report.render_png, "save", lambda fig, path: drawn.append(fig))
    sec.png(tmp_path / "history.png")
    ax = drawn[0].axes[0]
    assert [list(c.get_offsets()[:, 1]) for c in ax.collections if len(c.get_offsets())] == [values]
    assert [list(line.get_ydata()) for line in ax.lines] == [best]
    assert ax.get_legend() is not None


def test_last_lines_say_what_was_done_and_what_next(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", _quick("next", params={
        "lr": {"float": [0.005, 0.05], "log": True}, "color": {"choices": ["rgb", "gray"]}, "width": 4}))
    out = _invoke("create", str(space))
    assert "study 'next' ready in sqlite:///studies.db" in out
    assert "start workers with: strategy-search worker next" in out
    _invoke("run", str(space))
    out = _invoke("create", str(space))
    assert "(it already has 2 trial(s); workers resume it)" in out
    out = _invoke("best", "next")
    assert "export it:  strategy-search export next -o best/" in out
    assert json.loads(_invoke("best", "next", "--json"))["study"] == "next"  # JSON stays JSON
    out = _invoke("export", "next", "-o", "best.yaml")
    assert out.splitlines()[-1].startswith("re-train it: strategy-search train best.yaml")
    out = _invoke("train", "best.yaml", "--device", "cpu")  # what that line says to run
    assert "reproduced within" in out
    assert out.splitlines()[-1].startswith("keep the model: strategy-search train best.yaml -o DIR/")
    out = _invoke("ablate", "next", "--seeds", "2", "--only", "color", "--device", "cpu")
    assert out.splitlines()[-1] == "stored in study 'next'; chart it: strategy-search report next -o report.html"
    out = _invoke("confirm", "next", "--top", "1", "--seeds", "2", "--device", "cpu")
    assert out.splitlines()[-1] == "export the winner: strategy-search export next -o best/"
    out = _invoke("doctor", "digits", "--epochs", "1", "--limit", "100", "--no-probe", "--device", "cpu")
    assert out.splitlines()[-1].startswith("write a space with these remedies: strategy-search doctor digits -o ")
    storage = f"sqlite:///{workdir}/other.db"
    _invoke("create", str(space), "--storage", storage)
    out = _invoke("best", "next", "--storage", storage)
    assert "no completed trial yet" in out
    assert f"run trials: strategy-search worker next --storage '{storage}'" in out


def test_dashboard_says_where_and_stops_on_ctrl_c(workdir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--port", str(port)], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"open http://127.0.0.1:{port} in a browser (Ctrl-C stops it)" in first
        _wait_for_port(port, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err  # Ctrl-C is how a dashboard is stopped
    assert "dashboard stopped" in err and "Aborted!" not in err and "Traceback" not in err


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("the dashboard never listened")
