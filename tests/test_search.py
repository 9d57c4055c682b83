"""A real search on digits through the CLI: trials, pruning, best, export, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml
from click.testing import CliRunner

from conftest import tiny_space, write_space
from search.cli import main


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_search_prunes_reports_and_exports_a_reproducible_config(workdir: Path) -> None:
    doc = tiny_space(
        "cli-search",
        budget={"n_trials": 8, "max_epochs": 3},
        # Aggressive: from the second trial on, anything below the median at any epoch stops.
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        params={
            "lr": {"float": [0.00001, 0.05], "log": True},
            "batch_size": {"choices": [32, 64]},
            "optimizer": {"choices": ["adamw", "sgd"]},
            "dropout": {"float": [0.0, 0.5]},
            "weight_decay": {"float": [0.000001, 0.01], "log": True},
            "width": 4,
        },
    )
    space = write_space(workdir / "space.yaml", doc)
    out = _invoke("run", str(space))
    assert "best trial" in out and "validation split" in out

    study = optuna.load_study(study_name="cli-search", storage="sqlite:///studies.db")
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 1
    best = study.best_trial
    # Test metrics are stored for the finished trial, beside the validation ones.
    assert 0.0 <= best.user_attrs["test"]["accuracy"] <= 1.0
    assert best.user_attrs["val"]["accuracy"] == best.value
    assert len(best.user_attrs["history"]) == best.user_attrs["config"]["epochs"]
    assert [e["epoch"] for e in best.user_attrs["history"]] == sorted(best.intermediate_values)

    summary = json.loads(_invoke("best", "cli-search", "--json"))
    assert summary["best"][0]["number"] == best.number
    assert summary["best"][0]["values"]["accuracy"] == best.value
    assert summary["trials"]["PRUNED"] >= 1

    _invoke("export", "cli-search", "-o", "best.yaml")
    exported = yaml.safe_load((workdir / "best.yaml").read_text())
    assert exported["params"]["lr"] == best.params["lr"]
    assert exported["params"]["seed"] == best.user_attrs["config"]["seed"]
    assert exported["params"]["width"] == 4 and exported["dataset"] == doc["dataset"]
    assert exported["source"] == {"study": "cli-search", "trial": best.number,
                                  "values": {"accuracy": best.value}, "split": "validation"}

    # The exported config re-runs to the same validation score on CPU.
    _invoke("run", "best.yaml", "--device", "cpu")
    rerun = optuna.load_study(study_name=exported["study"], storage="sqlite:///studies.db")
    assert len(rerun.trials) == 1
    assert abs(rerun.best_value - best.value) < 1e-9
    assert rerun.best_trial.user_attrs["config"] == best.user_attrs["config"]


def test_run_resumes_and_respects_total_budget(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", tiny_space("resume", budget={"n_trials": 2, "max_epochs": 1}))
    _invoke("run", str(space))
    _invoke("run", str(space))  # nothing left to do: the budget is the study's total
    study = optuna.load_study(study_name="resume", storage="sqlite:///studies.db")
    assert len(study.trials) == 2
    _invoke("run", str(space), "--n-trials", "3")
    assert len(optuna.load_study(study_name="resume", storage="sqlite:///studies.db").trials) == 3


def test_changed_space_under_same_study_name_is_refused(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", tiny_space("same", budget={"n_trials": 1, "max_epochs": 1}))
    _invoke("run", str(space))
    doc = tiny_space("same", budget={"n_trials": 1, "max_epochs": 1})
    doc["params"]["width"] = 8
    write_space(space, doc)
    result = CliRunner().invoke(main, ["run", str(space)])
    assert result.exit_code == 2 and "different search space" in result.output


def test_missing_study_and_bad_storage_exit_2(workdir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["best", "nope"])
    assert result.exit_code == 2 and "no study named 'nope'" in result.output
    result = runner.invoke(main, ["best", "x", "--storage", "notaurl"])
    assert result.exit_code == 2 and "not valid" in result.output
    result = runner.invoke(main, ["best", "x", "--storage", "sqlite:////no/such/dir/s.db"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_storage_from_environment(workdir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STRATEGY_SEARCH_STORAGE", f"sqlite:///{workdir}/env.db")
    space = write_space(workdir / "space.yaml", tiny_space("env", budget={"n_trials": 1, "max_epochs": 1}))
    _invoke("run", str(space))
    assert (workdir / "env.db").exists() and not (workdir / "studies.db").exists()
