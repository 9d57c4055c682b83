"""Short real searches over the strategy catalogue, single- and multi-objective."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from click.testing import CliRunner
from optuna.trial import TrialState

from conftest import write_space
from search.cli import main


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_shapes_search_samples_many_strategies(workdir: Path) -> None:
    doc = {
        "study": "catalogue",
        "objective": {"metric": "f1", "average": "macro"},
        "dataset": {"name": "shapes", "limit": 300},
        "budget": {"n_trials": 8, "max_epochs": 2},
        "sampler": "random",
        "pruner": "none",
        "seed": 1,
        "augment_sets": {"mine": [{"rotate": 20}, "vflip"]},
        "params": {
            "augment": {"choices": ["none", "light", "crop+flip+whiten", "heavy", "mine"]},
            "color": {"choices": ["rgb", "gray", "hsv", "lab"]},
            "input_size": {"choices": [16, 24]},
            "aspect": {"choices": ["stretch", "pad"]},
            "norm": {"choices": ["batchnorm", "lrn", "none"]},
            "lrn_size": {"int": [3, 5], "step": 2, "when": {"norm": "lrn"}},
            "residual": {"choices": [False, True]},
            "depth": {"int": [1, 3]},
            "schedule": {"choices": ["constant", "cosine", "onecycle", "step"]},
            "optimizer": {"choices": ["sgd", "adamw"]},
            "lr": {"float": [0.001, 0.03], "log": True},
            "label_smoothing": {"float": [0.0, 0.2]},
            "width": 4,
        },
    }
    _invoke("run", str(write_space(workdir / "space.yaml", doc)))
    study = optuna.load_study(study_name="catalogue", storage="sqlite:///studies.db")
    assert len(study.trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in study.trials), [t.user_attrs for t in study.trials]
    for name in ("augment", "color", "norm", "schedule"):
        assert len({t.params[name] for t in study.trials}) >= 2, name
    for t in study.trials:
        # The stored config is what the trial ran; conditional params appear only when active.
        assert t.user_attrs["config"]["color"] == t.params["color"]
        assert ("lrn_size" in t.params) == (t.params["norm"] == "lrn")
        assert len(t.user_attrs["val"]["confusion"]) == 6
        assert t.user_attrs["n_params"] > 0 and t.user_attrs["latency_ms"] > 0
        assert set(t.user_attrs["test"]["per_class"]) == {f"{c}_{s}" for s in ("circle", "square", "triangle")
                                                           for c in ("red", "green")}
    details = _invoke("best", "catalogue", "--details")
    assert "confusion matrix (rows: true, columns: predicted)" in details
    assert "validation per class" in details and "test per class" in details


def test_multi_objective_shows_pareto_front(workdir: Path) -> None:
    doc = {
        "study": "pareto",
        "objective": [{"metric": "precision", "average": "binary", "positive_class": "target"},
                      {"metric": "recall", "average": "binary", "positive_class": "target"}],
        "dataset": {"name": "shapes-rare", "limit": 300},
        "budget": {"n_trials": 4, "max_epochs": 2},
        "sampler": "random",
        "seed": 0,
        "params": {"width": {"choices": [4, 8]}, "lr": {"float": [0.001, 0.03], "log": True},
                   "color": {"choices": ["rgb", "gray"]}},
    }
    _invoke("run", str(write_space(workdir / "space.yaml", doc)))
    summary = json.loads(_invoke("best", "pareto", "--json"))
    study = optuna.load_study(study_name="pareto", storage="sqlite:///studies.db")
    assert [o["name"] for o in summary["objectives"]] == ["precision[target]", "recall[target]"]
    front = {r["number"] for r in summary["best"]}
    assert front == {t.number for t in study.best_trials} and front
    for rec in summary["best"]:
        assert set(rec["values"]) == {"split", "precision[target]", "recall[target]"}
    table = _invoke("best", "pareto")
    assert f"Pareto front ({len(front)} trials)" in table or (len(front) == 1 and "best trial" in table)


def test_grid_runs_every_combination_once(workdir: Path) -> None:
    doc = {
        "study": "grid",
        "dataset": {"name": "digits", "limit": 200},
        "budget": {"max_epochs": 1},
        "sampler": "grid",
        "pruner": "none",
        "params": {"augment": {"choices": ["none", "crop", ["crop", "flip", "whiten"]]},
                   "seed": {"choices": [0, 1]}, "width": 4},
    }
    _invoke("run", str(write_space(workdir / "space.yaml", doc)))
    study = optuna.load_study(study_name="grid", storage="sqlite:///studies.db")
    combos = sorted((t.params["augment"], t.params["seed"]) for t in study.trials)
    assert combos == sorted((a, s) for a in ("none", "crop", "crop+flip+whiten") for s in (0, 1))
    assert all(t.user_attrs["config"]["seed"] == t.params["seed"] for t in study.trials)
