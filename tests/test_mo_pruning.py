"""Pruning studies with several objectives (MO-ASHA) and with quality constraints, on hand-made histories and
on a real two-objective study; what the report and the dashboard show of a pruned trial."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import optuna
import pytest
from optuna.trial import TrialState

from conftest import tiny_space
from search import records
from search.algorithms.mo_asha import MultiObjectiveASHA, dominates, fronts, ranking, spread_order
from search.algorithms.pruners import create_pruner
from search.core.errors import SpaceError
from search.space.parse import parse_space
from search.storage.backend import open_storage
from search.study.create import create_study
from search.study.intermediate import TrialJudge
from search.study.runner import _describe, run_trials
from search.tools.report import build_section
from search.tools.report.data import StudyView
from search.train.loop import EpochLog
from search.train.metrics import Metrics

DIRECTIONS = ["maximize", "minimize"]  # accuracy, params


# ----------------------------------------------------------------------------- the rule on plain vectors


def test_dominance_fronts_and_the_spread_order() -> None:
    # Costs (minimized): a dominates c; a and b do not dominate each other.
    a, b, c, d = (0.1, 5.0), (0.3, 1.0), (0.2, 6.0), (0.9, 9.0)
    assert dominates(a, c) and not dominates(c, a) and not dominates(a, b) and not dominates(b, a)
    assert not dominates(a, a)  # equal is not better
    assert fronts([a, b, c, d]) == [[0, 1], [2], [3]]
    # Inside a front: the best on the first objective, then the farthest from those taken.
    line = [(0.0, 1.0), (0.1, 0.9), (0.5, 0.5), (1.0, 0.0)]
    assert spread_order(line, [0, 1, 2, 3]) == [0, 3, 2, 1]
    assert ranking([c, a, d, b]) == [1, 3, 0, 2]


def _pruner(**options: Any) -> MultiObjectiveASHA:
    return MultiObjectiveASHA(DIRECTIONS, **{"min_resource": 1, "reduction_factor": 3, "n_startup_trials": 0,
                                             "max_resource": 9, **options})


# Accuracy and params at epoch 1 of six trials that reached it: two cheap-and-good ones lead.
AT_RUNG = [[0.80, 1000], [0.90, 4000], [0.50, 4000], [0.40, 8000], [0.60, 8000], [0.30, 2000]]


def test_a_dominated_trial_is_pruned_at_the_rung_and_a_leader_goes_on() -> None:
    pruner = _pruner()
    assert [s for s in range(1, 12) if pruner.is_rung(s)] == [1, 3]  # 9 is the last epoch: nothing to save
    verdict = pruner.judge(1, [0.45, 8000], AT_RUNG, n_finished=6)
    assert verdict.prune and verdict.at_rung and verdict.n == 7 and verdict.kept == 3
    assert verdict.dominated_by == 4  # 0.80/1000, 0.90/4000, 0.50/4000 and 0.60/8000: better, no larger
    assert "pruned at epoch 1: dominated by 4 of the 6 other trials" in verdict.reason
    leader = pruner.judge(1, [0.95, 1000], AT_RUNG, n_finished=6)
    assert not leader.prune and leader.place == 1 and leader.front == 1


def test_a_trial_no_other_dominates_is_kept_even_below_the_top_third() -> None:
    # A crowded front (five trials trading accuracy for size) and two dominated trials; the new trial
    # is on the front, close to two members: the spread order (ends first) puts it 4th of 8.
    rung = [[0.50, 500], [0.60, 1000], [0.70, 2000], [0.80, 4000], [0.90, 8000], [0.40, 3000], [0.55, 9000]]
    middle = [0.65, 1500]
    kept = _pruner().judge(1, middle, rung, n_finished=7)
    assert not kept.prune and kept.front == 1 and kept.dominated_by == 0
    assert kept.kept == 3 and kept.place == 4  # below the top third, kept for being on the front
    # keep_front off is the paper's rule: the front's members beyond the top 1/factor are pruned too.
    strict = _pruner(keep_front=False).judge(1, middle, rung, n_finished=7)
    assert strict.prune and strict.front == 1
    # The smallest model, however weak, is an end of the front: the spread order takes it early.
    assert _pruner(keep_front=False).judge(1, [0.20, 100], rung, n_finished=7).place == 2


def test_warm_up_start_up_and_steps_between_rungs_are_not_judged() -> None:
    bad = [0.10, 9000]
    assert _pruner().judge(1, bad, AT_RUNG, n_finished=6).prune
    assert not _pruner(n_warmup_steps=2).judge(1, bad, AT_RUNG, n_finished=6).prune  # warm-up
    assert _pruner(n_warmup_steps=2).judge(3, bad, AT_RUNG, n_finished=6).prune  # after it, at the next rung
    assert not _pruner(n_startup_trials=7).judge(1, bad, AT_RUNG, n_finished=6).prune  # start-up
    assert not _pruner().judge(2, bad, AT_RUNG, n_finished=6).at_rung  # not a rung
    assert not _pruner().judge(9, bad, AT_RUNG, n_finished=6).at_rung  # the last epoch
    assert not _pruner().judge(1, bad, [], n_finished=6).prune  # the first trial at a rung goes on
    assert not _pruner(min_resource=2).judge(1, bad, AT_RUNG, n_finished=6).at_rung
    with pytest.raises(ValueError, match="reduction_factor"):
        _pruner(reduction_factor=1)


# ----------------------------------------------------------------------------- the rule on recorded histories


def _history(values: Sequence[float | None], params: float = 1000.0, name: str = "accuracy") -> dict[str, Any]:
    """The records.INTERMEDIATE columns of a trial: params at step 0, then ``values`` per epoch."""
    steps = list(range(len(values) + 1))
    return {"step": steps, name: [None, *values], "params": [params] * len(steps)}


def _study(space: Any, histories: list[tuple[TrialState, dict[str, Any]]]) -> optuna.Study:
    study = optuna.create_study(directions=space.directions, pruner=create_pruner(space))
    for state, columns in histories:
        last = records.last_intermediate(columns, [o.name for o in space.objectives])
        values = last[1] if state == TrialState.COMPLETE and last else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values,
                                                  user_attrs={records.INTERMEDIATE: columns}))
    return study


def _entry(epoch: int, values: Sequence[float], confusion: list[list[int]] | None = None) -> EpochLog:
    metrics = Metrics(confusion or [[5, 0], [0, 5]], 0.5)
    return EpochLog(epoch, 0.5, 0.5, 0.5, values[0], values[0], 0.01, 0.1, 1.0, tuple(values), metrics)


def test_the_judge_prunes_a_dominated_running_trial_from_the_recorded_values() -> None:
    space = parse_space(tiny_space("mo", objective=["accuracy", "params"], pruner={"name": "mo_asha"},
                                   budget={"n_trials": 10, "max_epochs": 9}))
    assert isinstance(create_pruner(space), MultiObjectiveASHA)
    finished = [(TrialState.COMPLETE, _history([0.8 + 0.01 * e for e in range(9)], 1000)),
                (TrialState.COMPLETE, _history([0.7 + 0.01 * e for e in range(9)], 2000)),
                (TrialState.PRUNED, _history([0.3], 3000)),
                (TrialState.COMPLETE, _history([0.75 + 0.02 * e for e in range(9)], 500))]
    study = _study(space, finished)

    def run(accuracy: list[float], params: float) -> tuple[str | None, optuna.Trial]:
        trial = study.ask()
        judge = TrialJudge(space, trial, last_epoch=9)
        judge.costs({"params": params, "latency_ms": 1.0})
        why = None
        for epoch, acc in enumerate(accuracy, start=1):
            why = judge.epoch(_entry(epoch, [acc, params]))
            if why is not None:
                break
        return why, trial

    # Larger and worse than trials 0, 1 and 3 at epoch 1: pruned there, its values recorded.
    why, trial = run([0.5, 0.9], 2500)
    assert why is not None and why.startswith("pruned at epoch 1: dominated by 3 of the 4 other trials")
    stored = records.intermediate(study._storage.get_trial(trial._trial_id))
    assert stored == {"step": [0, 1], "accuracy": [None, 0.5], "params": [2500.0, 2500.0]}
    study.tell(trial, state=TrialState.PRUNED)
    # The smallest model: nobody dominates it, so it goes on through every rung however weak.
    why, trial = run([0.2] * 9, 100)
    assert why is None and records.intermediate(study._storage.get_trial(trial._trial_id))["step"] == list(range(10))


def test_a_quality_constraint_out_of_reach_prunes_during_training() -> None:
    space = parse_space(tiny_space("floor", objective="accuracy", pruner="median",
                                   constraints={"accuracy": {"min": 0.9}}, budget={"n_trials": 10, "max_epochs": 5}))
    # Completed trials gained at most 0.25 after epoch 1 and 0.05 after epoch 3.
    finished = [(TrialState.COMPLETE, {"step": [1, 2, 3, 4, 5], "accuracy": [a, a + .15, a + .2, a + .22, a + .25]})
                for a in (0.5, 0.6, 0.7)]
    study = _study(space, finished)

    def judged(curve: list[float]) -> tuple[str | None, optuna.Trial]:
        trial = study.ask()
        judge = TrialJudge(space, trial, last_epoch=5)
        for epoch, acc in enumerate(curve, start=1):
            why = judge.epoch(_entry(epoch, [acc], [[int(acc * 100), 100 - int(acc * 100)], [0, 100]]))
            if why is not None:
                return why, trial
        return None, trial

    # 0.6 at epoch 1 (0.6 + 0.25 < 0.9): it cannot plausibly reach 0.9.
    why, trial = judged([0.6])
    assert why == ("accuracy>=0.9 out of reach at epoch 1: 0.6000 now, and no completed trial gained more than "
                   "0.2500 after epoch 1 (3 compared)")
    assert records.fail_reason(study._storage.get_trial(trial._trial_id)) == why
    # 0.7 at epoch 1 could still get there; 0.8 at epoch 3 cannot (+0.05 at most).
    assert judged([0.7, 0.8, 0.8])[0].startswith("accuracy>=0.9 out of reach at epoch 3")
    assert judged([0.7, 0.85, 0.86, 0.88, 0.89])[0] is None  # the last epoch saves nothing: never judged there
    # Fewer than 3 completed curves to compare with: not judged.
    few = _study(space, finished[:2])
    trial = few.ask()
    assert TrialJudge(space, trial, 5).epoch(_entry(1, [0.1], [[10, 90], [0, 100]])) is None
    # Without pruning (pruner: none), nothing is pruned, but the values are still recorded.
    off = parse_space({**space.raw, "pruner": "none"})
    trial = _study(off, finished).ask()
    judge = TrialJudge(off, trial, 5)
    assert judge.epoch(_entry(1, [0.1], [[10, 90], [0, 100]])) is None and records.intermediate(
        trial.study._storage.get_trial(trial._trial_id))["accuracy"] == [0.1]


def test_spaces_with_several_objectives_prune_with_mo_asha(caplog: pytest.LogCaptureFixture) -> None:
    unnamed = [{k: v for k, v in tiny_space(objective=objective).items() if k != "pruner"}
               for objective in (["accuracy", "latency_ms"], "accuracy")]
    assert parse_space(unnamed[0]).pruner.name == "mo_asha"  # the default when several objectives are named
    assert parse_space(unnamed[1]).pruner.name == "median"
    with pytest.raises(SpaceError, match="mo_asha compares several objectives"):
        parse_space(tiny_space(pruner="mo_asha"))
    # A single-objective pruner named by such a study (it used to train every trial in full):
    # MO-ASHA with the options the two share, and a warning that says so.
    named = parse_space(tiny_space(objective=["accuracy", "params"], pruner={"name": "successive_halving",
                                                                          "reduction_factor": 2,
                                                                          "min_early_stopping_rate": 1}))
    with caplog.at_level(logging.WARNING):
        pruner = create_pruner(named)
    assert isinstance(pruner, MultiObjectiveASHA) and pruner.reduction_factor == 2
    assert "pruner successive_halving compares one objective; this study has 2, so it prunes with mo_asha " \
           "(reduction_factor=2)" in caplog.text


def test_mo_asha_prunes_nothing_during_the_samplers_start_up() -> None:
    def made(**overrides: Any) -> Any:
        return create_pruner(parse_space(tiny_space(objective=["accuracy", "params"], **overrides)))

    assert made(sampler={"name": "tpe", "n_startup_trials": 8}, pruner="mo_asha").n_startup_trials == 8
    assert made(sampler="tpe", pruner="mo_asha").n_startup_trials == 5  # tpe's own default
    # Given options win; a sampler without a random start-up leaves the registry's default.
    assert made(sampler={"name": "tpe", "n_startup_trials": 8},
                pruner={"name": "mo_asha", "n_startup_trials": 2}).n_startup_trials == 2
    assert made(sampler="random", pruner="mo_asha").n_startup_trials == 3
    # The pruner holds back while fewer trials than that have finished, then judges.
    pruner = made(sampler={"name": "tpe", "n_startup_trials": 8}, pruner="mo_asha")
    worse, better = [0.1, 500.0], [[0.9, 100.0]] * 3
    assert not pruner.judge(1, worse, better, n_finished=7).at_rung
    assert pruner.judge(1, worse, better, n_finished=8).prune


# ----------------------------------------------------------------------------- a real study, its report and dashboard


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Any, str]:
    """A two-objective study on digits (accuracy vs. params) that prunes: sampled learning rates from
    hopeless to good, three model sizes of which the largest breaks a params bound (never trained),
    rungs at epochs 1 and 3 of 6."""
    url = f"sqlite:///{tmp_path_factory.mktemp('mo')}/studies.db"
    doc = tiny_space("pareto", objective=["accuracy", "params"], dataset={"name": "digits", "limit": 400},
                     budget={"n_trials": 10, "max_epochs": 6}, sampler="random",
                     pruner={"name": "mo_asha", "n_startup_trials": 2}, constraints={"params": {"max": 3000}},
                     params={"lr": {"float": [0.0003, 0.03], "log": True}, "width": {"choices": [4, 8, 16]},
                             "depth": 2, "optimizer": "adamw"})
    space = parse_space(doc)
    study = create_study(space, open_storage(url))
    run_trials(study, space, device="cpu", worker_seed=0)
    return study, space, url


def test_a_two_objective_study_on_digits_prunes(pruned_study: tuple[optuna.Study, Any, str]) -> None:
    study, space, _ = pruned_study
    trials = study.get_trials(deepcopy=False)
    # The pre-training judge first: a model that breaks the params bound never trains, MO-ASHA or not.
    untrained = [t for t in trials if records.config_dict(t)["width"] == 16]
    assert untrained and all(t.state == TrialState.PRUNED and not records.history(t) for t in untrained)
    assert all(records.fail_reason(t).startswith("infeasible before training: params<=3000 broken")
               and records.intermediate(t)["step"] == [0] for t in untrained)
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t not in untrained]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(untrained) + len(pruned) + len(complete) == 10
    for t in pruned:
        epoch = records.pruned_at_epoch(t)
        assert epoch in (1, 3) and len(records.history(t)) == epoch  # stopped at a rung, nothing trained after
        columns = records.intermediate(t)
        assert columns["step"] == list(range(epoch + 1)) and columns["accuracy"][0] is None
        assert len(set(columns["params"])) == 1 and columns["params"][0] > 0  # known before the first step
        assert t.intermediate_values == {}  # Optuna's own one-number-per-step store stays empty
        assert records.fail_reason(t) is None  # pruned by MO-ASHA, not by a constraint
        assert _describe(t, ["accuracy", "params"], 1.0).startswith(
            f"trial {t.number:>3} PRUNED   at epoch {epoch} (accuracy={columns['accuracy'][-1]:.3g} params=")
    for t in complete:
        columns = records.intermediate(t)
        assert columns["step"] == list(range(7))
        assert [columns["accuracy"][-1], columns["params"][-1]] == pytest.approx(t.values)
    # `best` is unchanged: the Pareto front of the completed (feasible) trials only.
    front = records.best_trials(study)
    assert front and all(t.state == TrialState.COMPLETE for t in front)
    assert {t.number for t in front} == {t.number for t in study.best_trials}


def test_report_and_dashboard_show_a_pruned_trial(pruned_study: tuple[optuna.Study, Any, str], tmp_path: Path) -> None:
    study, space, url = pruned_study
    view = StudyView(study, space)
    pruned = next(t for t in view.trials if t.state == TrialState.PRUNED and records.pruned_at_epoch(t))
    epoch = records.pruned_at_epoch(pruned)
    columns = records.intermediate(pruned)

    section = build_section("pareto", view)
    points = {p.trial: p for p in section.data.figure.points}
    assert points[pruned.number].kind == "pruned"
    assert points[pruned.number].values == [columns["accuracy"][epoch], columns["params"][epoch]]
    assert points[pruned.number].label == f"trial {pruned.number}, pruned at epoch {epoch}"
    assert {n for n, p in points.items() if p.kind == "front"} == {t.number for t in records.best_trials(study)}
    untrained = sum(1 for t in view.trials if t.state == TrialState.PRUNED and records.pruned_at_epoch(t) is None)
    assert untrained and points.keys() == {t.number for t in view.trials} - {
        t.number for t in view.trials if t.state == TrialState.PRUNED and records.pruned_at_epoch(t) is None}
    html = section.to_html()
    assert f"{untrained} pruned trials stopped before their first epoch are not drawn" in html
    assert 'id="pruned-table"' in html and "pruned (values when stopped)" in html
    drawn = {trace.name: trace for trace in section.figure.data}
    assert pruned.number in [int(t.split()[1].rstrip(",")) for t in drawn["pruned (values when stopped)"].text]

    curves = build_section("objective-curves", view)
    curve = next(c for c in curves.data.figure.curves if c.trial == pruned.number)
    assert curve.kind == "pruned" and curve.steps == list(range(1, epoch + 1))
    assert curve.values == {"accuracy": columns["accuracy"][1:]}  # params is a cost: fixed, not a curve
    assert curve.name == f"trial {pruned.number} (pruned at epoch {epoch})"
    sec_png = tmp_path / "curves.png"
    curves.png(sec_png)
    assert sec_png.read_bytes()[:4] == b"\x89PNG"

    # The dashboard: the study's JSON carries the same curves as a plotly figure of its own.
    from search.tools.dashboard import make_server

    server = make_server(url, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/api/studies/{study._study_id}",
                                    timeout=30) as resp:
            body = json.loads(resp.read())
    finally:
        server.shutdown()
        server.server_close()
    (graph,) = [g for g in body["plotly_graph_objects"] if g["id"] == "objective-curves"]
    traces = {t["name"]: t for t in json.loads(graph["graph_object"])["data"]}
    trace = traces[curve.name]
    assert trace["x"] == curve.steps and trace["y"] == curve.values["accuracy"] and trace["line"]["dash"] == "dash"
    shown = next(t for t in body["trials"] if t["number"] == pruned.number)
    assert shown["state"] == "Pruned"
    attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
    assert json.loads(attrs[records.INTERMEDIATE]) == columns


def test_tpe_in_a_study_mo_asha_prunes_models_its_completed_trials_only() -> None:
    from search.algorithms.samplers import SamplerOnView, learning_from
    from search.storage.internals import without_pruned

    mo = MultiObjectiveASHA(DIRECTIONS)
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    assert isinstance(learning_from(tpe, mo, without_pruned), SamplerOnView)
    assert learning_from(tpe, optuna.pruners.NopPruner(), without_pruned) is tpe  # not pruned: as it is
    random = optuna.samplers.RandomSampler(seed=0)
    assert learning_from(random, mo, without_pruned) is random  # models nothing

    seen: list[set[TrialState]] = []

    class Watched(optuna.samplers.TPESampler):
        """TPE, noting the states of the trials it models each time it samples."""

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            seen.append({t.state for t in study.get_trials(deepcopy=False)}
                        | {t.state for t in study._get_trials(deepcopy=False, states=None)})
            return super().sample_relative(study, trial, search_space)

    study = optuna.create_study(directions=DIRECTIONS, sampler=learning_from(
        Watched(seed=0, n_startup_trials=5, multivariate=True), mo, without_pruned))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "y": optuna.distributions.IntDistribution(1, 9)}
    for i in range(20):
        pruned = i % 3 == 0
        study.add_trial(optuna.trial.create_trial(
            params={"x": i / 20, "y": 1 + i % 9}, distributions=dist, state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            values=None if pruned else [1.0 - abs(i / 20 - 0.3), 1000.0 + 10 * i]))
    trial = study.ask(dist)
    assert 0.0 <= trial.params["x"] <= 1.0 and 1 <= trial.params["y"] <= 9
    assert seen and all(TrialState.PRUNED not in states for states in seen)
    assert TrialState.PRUNED in {t.state for t in study.trials}  # the study itself keeps them
