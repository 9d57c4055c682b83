"""`ablate` finds the strategy that matters, `confirm` outranks a lucky trial, `best` shows intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution
from scipy import stats as scipy_stats

from conftest import tiny_space, write_space
from search.cli import main
from search.core.config import TrialConfig
from search.space.parse import parse_space
from search.tools.stats import bootstrap_metric, welch_interval
from search.study.create import create_study
from search.study.load import load_study
from search.records import best_trial

STORAGE = "sqlite:///studies.db"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _json(*args: str) -> dict:
    out = _invoke(*args, "--json")
    return json.loads(out[out.index("{"):])


def test_welch_interval_matches_scipy() -> None:
    a, b = [0.61, 0.58, 0.66, 0.63], [0.52, 0.57, 0.49]
    diff, lo, hi = welch_interval(a, b)
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (lo, hi) == pytest.approx((ci.low, ci.high))


def test_bootstrap_interval_of_accuracy_is_close_to_the_normal_one() -> None:
    confusion = [[170, 30], [10, 190]]  # accuracy 0.9 on 400 images
    lo, hi = bootstrap_metric(confusion, "accuracy")
    half = 1.96 * math.sqrt(0.9 * 0.1 / 400)
    assert lo == pytest.approx(0.9 - half, abs=0.006) and hi == pytest.approx(0.9 + half, abs=0.006)
    lo, hi = bootstrap_metric(confusion, "recall", "binary", positive=0)  # 170/200
    assert lo < 0.85 < hi and hi - lo < 0.12


def test_ablation_finds_color_matters_and_label_smoothing_is_noise(workdir: Path) -> None:
    # `shapes`: red vs green of equal luminance is half the label, so gray must hurt.
    doc = tiny_space(
        "color", dataset={"name": "shapes", "limit": 600}, budget={"n_trials": 1, "max_epochs": 5},
        params={"lr": 0.01, "batch_size": 32, "width": 8, "color": "rgb", "label_smoothing": 0.05},
    )
    write_space(workdir / "space.yaml", doc)
    _invoke("run", "space.yaml", "--device", "cpu")
    record = _json("ablate", "color", "--seeds", "3", "--device", "cpu")
    rows = {r["param"]: r for r in record["rows"]}
    assert set(rows) == {"color", "label_smoothing"}  # the two strategies the space names and switches on
    color, smoothing = rows["color"], rows["label_smoothing"]
    assert color["switched_to"] == "gray" and color["verdict"] == "mattered" and color["ci95"][1] < 0
    assert smoothing["switched_to"] == 0.0 and smoothing["verdict"] == "noise"
    assert smoothing["ci95"][0] < 0 < smoothing["ci95"][1]
    assert record["seeds"] == [10000, 10001, 10002] and all(len(r["values"]) == 3 for r in record["rows"])
    # Stored with the study for reports.
    study, _ = load_study("color", STORAGE)
    assert study.user_attrs["ablation"]["rows"] == record["rows"]
    # The report charts the stored ablation: one row per strategy, with its interval.
    _invoke("report", "color", "-o", "report.html", "--no-png")
    page = (workdir / "report.html").read_text()
    section = page[page.index('<section id="ablation">'):]
    section = section[:section.index("</section>")]
    assert 'id="fig-ablation"' in section and "color: rgb -&gt; gray" in section
    assert f"{color['delta']:+.3f}" in section and "mattered" in section
    assert "mattered" in _invoke("ablate", "color", "--seeds", "2", "--only", "color", "--device", "cpu")

    # `best` gives the test metric with a bootstrap interval, for this test set only.
    summary = _json("best", "color")
    (test,) = summary["best"][0]["test_interval"].values()
    assert test["ci95"][0] <= test["value"] <= test["ci95"][1] and test["n"] == summary["best"][0]["test"]["n"]
    assert test["value"] == summary["best"][0]["test"]["accuracy"]
    assert "holds for this test set only" in _invoke("best", "color")


def test_confirm_outranks_a_lucky_trial_and_export_follows(workdir: Path) -> None:
    doc = tiny_space("lucky", budget={"n_trials": 4, "max_epochs": 5},
                     params={"lr": {"choices": [0.0001, 0.01]}, "batch_size": 32, "width": 8})
    space = parse_space(doc)
    study = create_study(space, STORAGE)
    lr = CategoricalDistribution([0.0001, 0.01])
    weak = TrialConfig(lr=0.0001, batch_size=32, width=8, epochs=1, seed=0).to_dict()
    good = TrialConfig(lr=0.01, batch_size=32, width=8, epochs=5, seed=1).to_dict()
    # Trial 0's recorded score stands in for a lucky seed: its config (1 epoch at lr 1e-4) is weak.
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.0001}, distributions={"lr": lr}, value=0.95,
                                              user_attrs={"config": weak}))
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": lr}, value=0.80,
                                              user_attrs={"config": good}))
    assert _json("best", "lucky")["best"][0]["number"] == 0

    record = _json("confirm", "lucky", "--top", "2", "--seeds", "3", "--device", "cpu")
    assert [r["trial"] for r in record["rows"]] == [1, 0] and record["winner"] == 1 and record["changed"]
    assert record["rows"][0]["mean"] > record["rows"][1]["mean"] + 0.3
    assert record["rows"][0]["mean"] == pytest.approx(np.mean(record["rows"][0]["values"]))

    summary = _json("best", "lucky")
    assert summary["best"][0]["number"] == 1 and summary["confirmed"]["current"]
    _invoke("report", "lucky", "-o", "report.html", "--no-png")
    page = (workdir / "report.html").read_text()
    confirmed = page[page.index('<section id="confirmed">'):]
    assert 'id="fig-confirmed"' in confirmed[:confirmed.index("</section>")]
    assert "winner: trial 1 (the single-run best was trial 0)" in confirmed
    _invoke("export", "lucky", "-o", "best.yaml")
    assert yaml.safe_load((workdir / "best.yaml").read_text())["params"]["lr"] == 0.01

    # A later trial that beats every confirmed candidate makes the confirmation stale.
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": lr}, value=0.99,
                                              user_attrs={"config": good}))
    assert best_trial(study).number == 2
    assert "run confirm again" in _invoke("best", "lucky")


def test_ablate_and_confirm_errors(workdir: Path) -> None:
    write_space(workdir / "s.yaml", tiny_space("plain", budget={"n_trials": 1, "max_epochs": 1},
                                               params={"width": 4}))
    _invoke("run", "s.yaml", "--device", "cpu")
    runner = CliRunner()
    result = runner.invoke(main, ["ablate", "plain", "--device", "cpu"])
    assert result.exit_code == 2 and "no strategy to ablate" in result.output
    result = runner.invoke(main, ["ablate", "plain", "--only", "lr"])
    assert result.exit_code == 2 and "cannot ablate lr" in result.output
    result = runner.invoke(main, ["confirm", "nope"])
    assert result.exit_code == 2 and "no study named 'nope'" in result.output
