"""Space files: every shipped space parses; every kind of mistake gives one precise error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner

from conftest import ROOT, tiny_space, write_space
from search.cli import main
from search.core.errors import SpaceError
from search.space.parse import load_space, parse_space


def test_shipped_spaces_parse() -> None:
    files = sorted((ROOT / "spaces").glob("*.yaml"))
    assert files, "no spaces shipped"
    for f in files:
        space = load_space(f)
        assert space.study and space.params


def test_types_and_defaults() -> None:
    space = parse_space(tiny_space(), source="t.yaml")
    assert space.study == "tiny"
    assert space.directions == ["maximize"]
    assert space.dataset.name == "digits" and space.dataset.limit == 400
    assert space.budget.max_epochs == 3
    lr = space.param("lr")
    assert lr is not None and lr.kind == "float" and lr.log and (lr.low, lr.high) == (0.001, 0.05)
    assert space.param("width").kind == "fixed"
    config = space.sample(optuna.trial.FixedTrial({"lr": 0.01, "batch_size": 32, "optimizer": "sgd"}))
    assert config.lr == 0.01 and config.batch_size == 32 and config.optimizer == "sgd"
    assert config.width == 4 and config.epochs == 3  # fixed value, and epochs default to max_epochs


def test_conditional_param_sampled_only_when_active() -> None:
    doc = tiny_space(params={
        "norm": {"choices": ["batchnorm", "lrn"]},
        "lrn_size": {"int": [3, 7], "step": 2, "when": {"norm": "lrn"}},
    })
    space = parse_space(doc)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = space.sample(trial)
        seen.add(config.norm)
        assert ("lrn_size" in trial.params) == (config.norm == "lrn")
        study.tell(trial, 0.0)
    assert seen == {"batchnorm", "lrn"}


def test_objective_forms() -> None:
    space = parse_space(tiny_space(objective={"metric": "precision", "average": "binary", "positive_class": "3"}))
    assert space.objectives[0].name == "precision[3]"
    multi = parse_space(tiny_space(objective=["accuracy", "latency_ms"]))
    assert multi.directions == ["maximize", "minimize"] and multi.multi_objective


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"studdy": "x"}, "studdy", "unknown key"),
    ({"params": {"dropuot": 0.1}}, "params.dropuot", "unknown param"),
    ({"params": {"dropout": {"float": [0.6, 0.2]}}}, "params.dropout.float", "above high"),
    ({"params": {"dropout": {"float": [0.0, 1.5]}}}, "params.dropout.float[1]", "<= 0.99"),
    ({"params": {"dropout": {"float": [0.1]}}}, "params.dropout.float", "[low, high]"),
    ({"params": {"lr": {"float": [0, 0.1]}}}, "params.lr.float[0]", "> 0"),
    ({"params": {"weight_decay": {"float": [0, 0.1], "log": True}}}, "params.weight_decay.log", "low > 0"),
    ({"params": {"depth": {"float": [1, 3]}}}, "params.depth.float", "int"),
    ({"params": {"optimizer": {"choices": ["adamw", "rmsprop"]}}}, "params.optimizer.choices[1]", "allowed: sgd"),
    ({"params": {"color": "purple"}}, "params.color", "allowed: rgb"),
    ({"params": {"augment": {"choices": ["crop", "twirl"]}}}, "params.augment.choices[1]", "unknown augmentation"),
    ({"params": {"dropout": {"float": [0.1, 0.2], "lg": True}}}, "params.dropout.lg", "unknown key"),
    ({"params": {"lrn_size": {"int": [3, 5], "when": {"norm": "lrn"}}}}, "params.lrn_size.when.norm", "listed above"),
    ({"params": {"epochs": {"int": [1, 9]}}}, "params.epochs", "max_epochs is 3"),
    ({"params": {"batch_size": [16, 32]}}, "params.batch_size", "choices"),
    ({"sampler": "bayes"}, "sampler.name", "allowed: tpe, random, cmaes, grid"),
    ({"pruner": {"name": "median", "patience": 3}}, "pruner.patience", "allowed: n_startup_trials"),
    ({"sampler": "cmaes"}, "params.batch_size", "cmaes"),
    ({"sampler": "grid", "params": {"lr": {"float": [0.1, 0.2]}}}, "params.lr.float", "grid"),
    ({"objective": {"metric": "precision", "average": "binary"}}, "objective.positive_class", "positive_class"),
    ({"objective": "auc"}, "objective.metric", "allowed: accuracy"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials", ">= 1"),
    ({"budget": {"max_epochs": "many"}}, "budget.max_epochs", "integer"),
    ({"dataset": {"name": "mnist"}}, "dataset.name", "allowed: digits"),
    ({"dataset": {"name": "digits", "val_fraction": 0.6, "test_fraction": 0.4}}, "dataset", "leave data"),
]


@pytest.mark.parametrize("change,key,message", BAD, ids=[b[1] for b in BAD])
def test_bad_space_errors_name_file_key_and_allowed(tmp_path: Path, change: dict[str, Any], key: str,
                                                    message: str) -> None:
    doc = tiny_space()
    for k, v in change.items():
        if k == "params" and "params" in doc and k in change:
            doc["params"] = {**doc["params"], **v}
        else:
            doc[k] = v
    if "studdy" in change:
        del doc["study"]
    path = write_space(tmp_path / "bad.yaml", doc)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    err = info.value
    assert err.key == key, str(err)
    assert message in err.message, str(err)
    assert str(path) in str(err)


def test_missing_study_and_bad_yaml(tmp_path: Path) -> None:
    doc = tiny_space()
    del doc["study"]
    with pytest.raises(SpaceError, match="study: missing"):
        load_space(write_space(tmp_path / "a.yaml", doc))
    bad = tmp_path / "b.yaml"
    bad.write_text("study: x\nparams: {lr: [\n")
    with pytest.raises(SpaceError, match="not valid YAML: line"):
        load_space(bad)


def test_cli_reports_bad_space_in_one_line_with_exit_2(tmp_path: Path) -> None:
    doc = tiny_space(params={"dropout": {"float": [0.6, 0.2]}})
    path = write_space(tmp_path / "bad.yaml", doc)
    result = CliRunner().invoke(main, ["run", str(path), "--storage", f"sqlite:///{tmp_path}/s.db"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "params.dropout.float" in lines[0] and "bad.yaml" in lines[0]
    assert "Traceback" not in result.output
