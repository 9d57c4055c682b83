"""Stop rules, business constraints, enqueue and warm starts: space keys, workers, best/export/report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import tiny_space, write_space
from search.cli import main
from search.core.errors import SpaceError
from search.space.parse import load_space, parse_space
from search.study.stopping import evaluate

CLI = [sys.executable, "-m", "search.cli"]


def _invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


# ----------------------------------------------------------------------------- bad input: one line, file + key


@pytest.mark.parametrize("change, key, message", [
    ({"budget": {"target": 1.5}}, "budget.target", "(0, 1]"),
    ({"budget": {"target": "high"}}, "budget.target", "expected a number"),
    ({"budget": {"patience": 0}}, "budget.patience", ">= 1"),
    ({"budget": {"patience": 2.5}}, "budget.patience", "expected an integer"),
    ({"budget": {"min_delta": 0.01}}, "budget.min_delta", "patience"),
    ({"budget": {"patience": 3, "min_delta": -1}}, "budget.min_delta", ">= 0"),
    ({"budget": {"goal": 0.9}}, "budget.goal", "allowed: n_trials, timeout, time, max_epochs, target, patience, min_delta"),
    ({"constraints": {"speed": {"max": 5}}}, "constraints.speed", "trials record: accuracy, precision"),
    ({"constraints": {"latency_ms": {"below": 5}}}, "constraints.latency_ms.below", "allowed: min, max"),
    ({"constraints": {"latency_ms": {}}}, "constraints.latency_ms", "give min, max or both"),
    ({"constraints": {"precision": {"min": 0.9, "max": 0.5}}}, "constraints.precision", "above max"),
    ({"constraints": {"latency_ms": {"max": 0}}}, "constraints.latency_ms.max", "> 0"),
    ({"constraints": [{"latency_ms": 5}]}, "constraints", "expected a mapping"),
    ({"enqueue": {"lr": 0.01}}, "enqueue", "expected a list"),
    ({"enqueue": [{"dropout": 0.1}]}, "enqueue[0].dropout", "searched params: lr, batch_size, optimizer"),
    ({"enqueue": [{"lr": 0.5}]}, "enqueue[0].lr", "outside the range [0.001, 0.05]"),
    ({"enqueue": [{"batch_size": 48}]}, "enqueue[0].batch_size", "not one of the choices 32, 64"),
    ({"enqueue": [{"width": 8}]}, "enqueue[0].width", "fixed at 4"),
    ({"enqueue": ["lr"]}, "enqueue[0]", "non-empty mapping"),
])
def test_bad_stop_constraint_and_enqueue_keys_name_file_key_and_allowed(tmp_path: Path, change: dict[str, Any],
                                                                      key: str, message: str) -> None:
    doc = tiny_space("bad")
    for k, v in change.items():
        doc[k] = {**doc[k], **v} if k == "budget" else v
    path = write_space(tmp_path / "bad.yaml", doc)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    text = str(err.value)
    assert "\n" not in text and "bad.yaml" in text and key in text and message in text, text


def test_bad_key_is_one_line_exit_2_from_the_cli(workdir: Path) -> None:
    path = write_space(workdir / "s.yaml", tiny_space("bad", constraints={"speed": {"max": 1}}))
    result = subprocess.run([*CLI, "run", str(path)], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "constraints.speed" in result.stderr


# ----------------------------------------------------------------------------- stop rules


def _done(number: int, value: float, **attrs: Any) -> optuna.trial.FrozenTrial:
    t = create_trial(value=value, params={"lr": 0.01}, distributions={"lr": FloatDistribution(0.001, 0.1)},
                     user_attrs=attrs)
    t.number = number
    return t


def test_patience_counts_finished_trials_since_the_last_improvement_by_min_delta() -> None:
    values = [0.50, 0.60, 0.601, 0.59, 0.58]  # 0.601 is not an improvement of more than 0.002
    trials = [_done(i, v) for i, v in enumerate(values)]
    space = parse_space(tiny_space("p", budget={"n_trials": 20, "max_epochs": 1, "patience": 3, "min_delta": 0.002}))
    reason = evaluate(space, trials, maximize=True)
    assert reason is not None and reason["rule"] == "patience" and reason["trial"] == 1
    assert "3 finished trials" in reason["message"]
    assert evaluate(space, trials[:4], maximize=True) is None
    looser = parse_space(tiny_space("p", budget={"n_trials": 20, "max_epochs": 1, "patience": 3}))
    assert evaluate(looser, trials, maximize=True) is None  # 0.601 improved on 0.60 without min_delta
    # Copied (warm-start) trials are not judged: the study's own trials are.
    copied = [_done(i, v, warm_start={"study": "x", "trial": i}) for i, v in enumerate(values)]
    assert evaluate(space, copied, maximize=True) is None


def test_target_stops_both_workers_after_their_running_trial(workdir: Path) -> None:
    doc = tiny_space("target", budget={"n_trials": 12, "max_epochs": 1, "target": 0.01}, sampler="tpe")
    space = write_space(workdir / "space.yaml", doc)
    assert subprocess.run([*CLI, "create", str(space)], cwd=workdir, capture_output=True, text=True,
                          timeout=300).returncode == 0
    workers = [subprocess.Popen([*CLI, "worker", "target"], cwd=workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="target", storage="sqlite:///studies.db")
    # The first finished trial reaches 0.01; a trial the other worker had already started may finish too.
    assert 1 <= len(study.trials) <= 3, [t.state for t in study.trials]
    reason = study.user_attrs["stop_reason"]
    assert reason["rule"] == "target" and reason["value"] >= 0.01
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all("stopped by budget.target" in o for o in outputs), outputs
    out = _invoke("best", "target")
    assert f"stopped by budget.target: trial {reason['trial']} reached the target accuracy >= 0.01" in out
    assert json.loads(_invoke("best", "target", "--json"))["stopped"]["rule"] == "target"
    _invoke("report", "target", "-o", "r.html", "--no-png")
    assert "stopped by budget.target" in (workdir / "r.html").read_text()
    # A stopped study stays stopped on resume; a new target (budget change) judges afresh.
    again = _invoke("run", str(space))
    assert "this process ran 0 trial(s)" in again
    doc["budget"]["target"] = 0.999
    write_space(space, doc)
    doc["budget"]["n_trials"] = len(study.trials) + 1
    write_space(space, doc)
    assert "this process ran 1 trial(s)" in _invoke("run", str(space))


# ----------------------------------------------------------------------------- constraints


def _constrained(name: str, max_params: int) -> dict[str, Any]:
    return tiny_space(name, budget={"n_trials": 4, "max_epochs": 1}, sampler="tpe",
                      constraints={"params": {"max": max_params}, "latency_ms": {"max": 1000}},
                      params={"lr": {"float": [0.005, 0.05], "log": True}, "width": {"choices": [4, 16]},
                              "depth": 2},
                      enqueue=[{"width": 16}, {"width": 4}])


def test_constraints_are_stored_and_only_feasible_trials_are_best_exported_and_confirmed(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", _constrained("cons", 3000))  # width 16 has ~5,500 params
    out = _invoke("run", str(space))
    study = optuna.load_study(study_name="cons", storage="sqlite:///studies.db")
    trials = study.trials
    assert [t.params["width"] for t in trials[:2]] == [16, 4]  # the enqueued configs ran first, in order
    assert {t.params["width"] for t in trials} == {4, 16}
    for t in trials:
        attrs = t.user_attrs
        assert attrs["constraints"]["params<=3000"]["value"] == attrs["n_params"]
        if t.params["width"] == 16:
            # Too big to ship: stopped before its first step, its constraint values stored for the sampler.
            assert t.state == TrialState.PRUNED and not t.intermediate_values and "history" not in attrs
            assert t.constraints["params<=3000"] > 0 and attrs["feasible"] is False and attrs["n_params"] > 3000
            assert attrs["fail_reason"].startswith("infeasible before training: params<=3000 broken (")
        else:
            assert t.state == TrialState.COMPLETE and attrs["feasible"] is True
            assert t.constraints["params<=3000"] < 0 and t.constraints["latency_ms<=1000"] < 0
    assert "infeasible before training" in out
    best = json.loads(_invoke("best", "cons", "--json"))
    assert best["best"][0]["params"]["width"] == 4
    assert best["constraints"]["feasible"] == sum(t.params["width"] == 4 for t in trials)
    assert "latency on another machine differs" in out and "measured on cpu" in out
    _invoke("export", "cons", "-o", "best.yaml")
    assert yaml.safe_load((workdir / "best.yaml").read_text())["params"]["width"] == 4
    _invoke("report", "cons", "-o", "r.html", "--no-png")
    page = (workdir / "r.html").read_text()
    assert "INFEASIBLE" in page and "not trained" in page and "params 5" in page and "&gt; 3000" in page
    assert "stopped before training" in page


def test_no_feasible_trial_says_so_and_shows_the_closest(workdir: Path) -> None:
    doc = _constrained("none-ok", 100)  # every model has more than 100 params
    doc["budget"]["n_trials"] = 2
    space = write_space(workdir / "space.yaml", doc)
    out = _invoke("run", str(space))
    study = optuna.load_study(study_name="none-ok", storage="sqlite:///studies.db")
    narrow = next(t for t in study.trials if t.params["width"] == 4)
    assert f"no trial meets the constraints; the closest is trial {narrow.number}: params" in out
    summary = json.loads(_invoke("best", "none-ok", "--json"))
    assert summary["best"] == [] and summary["closest_infeasible"]["number"] == narrow.number
    result = CliRunner().invoke(main, ["export", "none-ok", "-o", "x.yaml"])
    assert result.exit_code == 2 and "no trial that meets its constraints; the closest is trial" in result.output
    assert not (workdir / "x.yaml").exists()


# ----------------------------------------------------------------------------- warm start


def test_warm_start_copies_fitting_trials_once_and_they_use_no_budget(workdir: Path) -> None:
    source = tiny_space("src", budget={"n_trials": 4, "max_epochs": 1},
                        params={"lr": {"float": [0.001, 0.05], "log": True}, "width": {"choices": [4, 8]},
                                "depth": 2})
    source["enqueue"] = [{"lr": 0.002, "width": 4}, {"lr": 0.02, "width": 8}, {"lr": 0.04, "width": 4}]
    _invoke("run", str(write_space(workdir / "src.yaml", source)))
    target = {**source, "study": "dst", "budget": {"n_trials": 2, "max_epochs": 1}, "sampler": "tpe",
              "params": {**source["params"], "lr": {"float": [0.01, 0.05], "log": True}}}
    target.pop("enqueue")
    space = write_space(workdir / "dst.yaml", target)
    out = _invoke("run", str(space), "--warm-start", "src")
    src = optuna.load_study(study_name="src", storage="sqlite:///studies.db")
    fits = [t for t in src.trials if 0.01 <= t.params["lr"] <= 0.05]
    assert 2 <= len(fits) < 4  # lr 0.002 does not fit the new range
    assert f"copied {len(fits)} finished trial(s) of study 'src'; skipped {4 - len(fits)}" in out
    assert "lr outside the range [0.01, 0.05]" in out
    dst = optuna.load_study(study_name="dst", storage="sqlite:///studies.db")
    copied = [t for t in dst.trials if "warm_start" in t.user_attrs]
    assert sorted(t.user_attrs["warm_start"]["trial"] for t in copied) == sorted(t.number for t in fits)
    assert {t.params["lr"]: t.value for t in copied} == {t.params["lr"]: t.value for t in fits}
    assert len(dst.trials) == len(fits) + 2  # n_trials 2 sampled on top of the copies
    again = _invoke("run", str(space), "--warm-start", "src", "--n-trials", "3")
    assert "not copied again" in again and "this process ran 1 trial(s)" in again
    other = write_space(workdir / "dst2.yaml", {**target, "study": "dst2"})
    bad = CliRunner().invoke(main, ["run", str(other), "--warm-start", "ghost"])
    assert bad.exit_code == 2 and "no study named 'ghost'" in bad.output


def test_pareto_front_and_best_skip_infeasible_trials() -> None:
    from search.tools.summary import closest_infeasible
    from search.records import best_trial, best_trials

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"lr": FloatDistribution(0.001, 0.1)}
    # (accuracy, latency) and the relative violation of latency_ms<=5
    for acc, lat, violation in [(0.95, 9.0, 0.8), (0.90, 4.0, -0.2), (0.80, 2.0, -0.6), (0.70, 3.0, -0.4)]:
        study.add_trial(create_trial(values=[acc, lat], params={"lr": 0.01}, distributions=dist,
                                     constraints={"latency_ms<=5": violation}))
    front = best_trials(study)
    assert sorted(t.number for t in front) == [1, 2]  # trial 0 dominates on accuracy but is infeasible
    assert best_trial(study).number == 1 and closest_infeasible(study) is None
    single = optuna.create_study(direction="maximize")
    for acc, violation in [(0.99, 0.5), (0.90, 0.1)]:
        single.add_trial(create_trial(value=acc, params={"lr": 0.01}, distributions=dist,
                                      constraints={"params<=1000": violation}))
    assert best_trials(single) == [] and closest_infeasible(single).number == 1


def test_warm_start_fit_names_why_a_trial_does_not_fit() -> None:
    from search.core.config import TrialConfig
    from search.study.warmstart import fit_trial

    space = parse_space(tiny_space("w", budget={"n_trials": 2, "max_epochs": 3}))
    config = {**TrialConfig().to_dict(), "lr": 0.01, "batch_size": 32, "optimizer": "sgd", "width": 4, "depth": 2,
              "epochs": 3}
    params, dists = fit_trial(space, config)
    assert params == {"lr": 0.01, "batch_size": 32, "optimizer": "sgd"} and set(dists) == set(params)
    assert fit_trial(space, {**config, "batch_size": 128}) == "batch_size not one of the choices 32, 64"
    assert fit_trial(space, {**config, "width": 8}) == "width fixed at 4 here"
    assert fit_trial(space, {**config, "dropout": 0.3}) == "dropout was 0.3, this space uses 0.0"
    assert fit_trial(space, {**config, "epochs": 2}) == "epochs was 2, this space uses 3"
