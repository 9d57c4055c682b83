"""The pieces of issue 24 on their own: ablate's resume, estimate and seed advice; the report's result
section; the best-epoch strategy; dashboard notes and the read-only statement; the doctor's wording;
the run's budget line."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from conftest import tiny_space, write_space
from search import records
from search.cli import main
from search.core.config import TrialConfig
from search.core.spec import DatasetSpec
from search.space.parse import parse_space
from search.study.create import create_study
from search.tools import reruns
from search.train.loop import train
from search.train.metrics import Metrics

STORAGE = "sqlite:///studies.db"


def _invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


# ----------------------------------------------------------------------------- ablate / confirm


def test_ablate_resumes_after_an_interrupt_and_says_how_long(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tiny_space("abl", budget={"n_trials": 1, "max_epochs": 2}, dataset={"name": "digits", "limit": 200},
                     params={"lr": 0.02, "width": 4, "depth": 1, "dropout": 0.1, "weight_decay": 0.001})
    write_space(workdir / "s.yaml", doc)
    _invoke("run", "s.yaml", "--device", "cpu")

    real = reruns.train_space
    calls: list[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["label"])
        if len(calls) == 4:  # Ctrl-C in the 4th of 6 runs (best config + 2 variants, x 2 seeds)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reruns, "train_space", interrupted)
    result = CliRunner().invoke(main, ["ablate", "abl", "--seeds", "2", "--device", "cpu"])
    assert result.exit_code == 130
    assert "every finished run is stored with study 'abl'; run the same command again to resume" in result.output
    assert "3 config(s) x 2 seeds = 6 runs of 2 epochs" in result.output and "about " in result.output
    study = optuna.load_study(study_name="abl", storage=STORAGE)
    assert len(records.reruns(study)) == 3 and records.ablation(study) is None

    calls.clear()
    out = _invoke("ablate", "abl", "--seeds", "2", "--device", "cpu")
    assert len(calls) == 3  # only the missing runs
    assert "3 done before (stored with the study), 3 to go" in out
    record = records.ablation(optuna.load_study(study_name="abl", storage=STORAGE))
    assert record is not None and record.resumed_runs == 3
    assert {r.param for r in record.rows} == {"dropout", "weight_decay"}
    # The first runs' values are the stored ones; a fresh command trains nothing more.
    stored = records.reruns(study)
    assert list(record.reference.values) == [e.value for e in stored.values() if e.label == "best config"]
    calls.clear()
    assert "nothing left to train" in _invoke("ablate", "abl", "--seeds", "2", "--device", "cpu")
    assert calls == []
    # Readable values and the epochs used, in the table.
    assert "dropout: 0.1 -> 0" in out and "weight_decay: 0.001 -> 0" in out
    assert "2 epochs per run, as trial 0 trained" in out
    monkeypatch.setattr(reruns, "train_space", real)
    short = _invoke("ablate", "abl", "--seeds", "2", "--budget-epochs", "1", "--only", "dropout", "--device", "cpu")
    assert "1 epochs per run (trial 0 trained 2: --budget-epochs)" in short


def test_seed_advice_when_intervals_are_too_wide() -> None:
    from search.tools.ablate import seed_advice, seeds_needed

    # Two seeds, a consistent -0.03 change against a 0.02 spread: undecided now, decided with more seeds.
    reference = [0.80, 0.83]
    variant = [0.77, 0.80]
    need = seeds_needed(variant, reference, -0.03)
    assert need is not None and 2 < need <= 30
    dropout = records.AblationRow(param="dropout", best=0.1, switched_to=0.0, values=tuple(variant), diverged=0,
                                  delta=-0.03, ci95=(-0.3, 0.24), verdict="noise")
    color = records.AblationRow(param="color", best="rgb", switched_to="gray", values=(0.8, 0.83), diverged=0,
                                delta=0.0, ci95=(-0.2, 0.2), verdict="noise")
    record = records.AblationRecord(trial=0, objective="accuracy", direction="maximize", seeds=(10000, 10001),
                                    epochs=1, reference=records.AblationReference(tuple(reference), 0, 0.815, 0.02),
                                    rows=(dropout, color), seconds=1.0)
    advice = seed_advice(record)
    assert advice is not None
    assert advice.undecided == ("dropout",) and advice.suggested_seeds == need and "color" in advice.tiny
    assert f"--seeds {need}" in advice.message
    record = replace(record, rows=(replace(dropout, verdict="mattered"), color))
    assert seed_advice(record) is None


# ----------------------------------------------------------------------------- report result section


def _doctor_space(study: str) -> dict[str, Any]:
    doc = tiny_space(study, budget={"n_trials": 6, "max_epochs": 3},
                     params={"lr": {"float": [0.001, 0.1], "log": True}, "width": 4})
    doc["doctor"] = {"objective": "accuracy", "dataset": "built-in:digits",
                     "baseline": {"value": 0.5, "epochs": 10, "seconds": 3.0, "classes": ["a", "b"],
                                  "val_confusion": [[30, 20], [30, 20]]},
                     "findings": [{"kind": "underfitting", "summary": "training accuracy only 0.6"}],
                     "why": {"lr": "a decade either side", "width": "the baseline's width"}}
    return doc


def _add(study: optuna.Study, value: float, confusion: list[list[int]], curve: list[float], seconds: int = 10) -> None:
    import datetime

    start = datetime.datetime(2025, 1, 1, 12, 0, 0) + datetime.timedelta(minutes=len(study.trials))
    metrics = Metrics(confusion=confusion, loss=0.5).to_dict(["a", "b"])
    trial = optuna.trial.create_trial(
        params={"lr": 0.01 + len(study.trials) / 1000}, distributions={"lr": FloatDistribution(0.001, 0.1, log=True)},
        value=value, user_attrs={records.VAL: metrics, records.N_PARAMS: 1234, records.LATENCY_MS: 0.5,
                                 records.HISTORY: [{"epoch": i + 1, "value": v, "train_loss": 1.0}
                                                   for i, v in enumerate(curve)]})
    trial.datetime_start, trial.datetime_complete = start, start + datetime.timedelta(seconds=seconds)
    study.add_trial(trial)


def test_result_section_compares_with_the_doctors_baseline(workdir: Path) -> None:
    from search.tools.report import StudyView
    from search.tools.report.result import baseline_of, gain_interval, next_steps, result, run_facts

    space = parse_space(_doctor_space("res"))
    study = create_study(space, STORAGE)
    _add(study, 0.70, [[40, 10], [20, 30]], [0.6, 0.7, 0.7])
    _add(study, 0.90, [[45, 5], [5, 45]], [0.7, 0.95, 0.90])  # the best: peaked at epoch 2
    _add(study, 0.89, [[44, 6], [5, 45]], [0.8, 0.85, 0.89])
    view = StudyView(study, space)
    base = baseline_of(view)
    assert base is not None and base.value == pytest.approx(0.5)
    lo, hi = gain_interval(view, base)
    assert lo < 0.4 < hi and lo > 0.2  # gain 0.9 - 0.5, clearly above 0
    facts = run_facts(view)
    assert facts["planned"] == 6 and facts["used"] == 3 and "stopped before its budget (3 of 6)" in facts["why"]
    assert facts["trial_seconds"] == pytest.approx(30) and facts["epochs"] == 9
    steps = " ".join(next_steps(view, base, (lo, hi), facts))
    assert "confirm the top 2" in steps  # trial 2 is within one standard error of the best
    assert "strategy-search ablate res --seeds 5" in steps
    assert "keep the best epoch: trial 1 peaked at 0.950 at epoch 2" in steps
    data = result(view, "result", "Result")
    text = json.dumps([b.__dict__ for b in data.blocks], default=str)
    assert "+0.4000 accuracy, 95% interval" in text and "the doctor's baseline (small CNN, 10 epochs" in text
    assert "training accuracy only 0.6" in text and "a decade either side" in text
    assert "1,234 parameters" in text and "0.5 ms per image" in text
    per_class = next(b for b in data.blocks if getattr(b, "table_id", "") == "per-class-table")
    assert per_class.rows[0][:5] == ("a", "0.900", "0.900", "0.900", 50)


def test_report_marks_a_stale_ablation_and_shows_the_leaderboard(workdir: Path) -> None:
    space = parse_space(_doctor_space("stale"))
    study = create_study(space, STORAGE)
    _add(study, 0.70, [[40, 10], [20, 30]], [0.7])
    records.record_ablation(study, records.AblationRecord(
        trial=0, objective="accuracy", direction="maximize", seeds=(1, 2), epochs=1, trial_epochs=3,
        confidence=0.95, interval="Welch", reference=records.AblationReference((0.7, 0.7), 0, 0.7, 0.0),
        rows=(records.AblationRow(param="dropout", best=0.123456, switched_to=0.0, values=(0.69, 0.69), diverged=0,
                                  mean=0.69, std=0.0, delta=-0.01, ci95=(-0.05, 0.03), verdict="noise"),),
        seconds=1.0))
    _add(study, 0.90, [[45, 5], [5, 45]], [0.9])
    _invoke("report", "stale", "-o", "r.html", "--no-png")
    page = (workdir / "r.html").read_text()
    ablation = page[page.index('<section id="ablation">'):]
    assert "STALE: this ablation is of trial 0, which is no longer the best trial (trial 1 is)" in ablation
    assert "dropout: 0.123 -&gt; 0" in ablation and "1 epochs per run (trial 0 trained 3" in ablation
    board = page[page.index('<section id="leaderboard">'):]
    assert board.index("<td>1</td><td>1</td><td>0.9000</td>") < board.index("<td>2</td><td>0</td><td>0.7000</td>")
    assert "fig-slice" in page
    out = _invoke("best", "stale", "--top", "2")
    assert "top 2" in out and out.index("lr=0.011") < out.index("lr=0.01\n")


# ----------------------------------------------------------------------------- keep the best epoch


def test_restore_best_epoch_keeps_the_peak_epochs_weights() -> None:
    from search.strategies import STRATEGIES
    from search.tools.ablate import variants
    from search.tools.doctor.remedies import advised

    data = DatasetSpec(name="digits", limit=300)
    # SGD at a high rate without a schedule: the validation curve is jagged, its peak not at the end.
    config = TrialConfig(lr=0.5, optimizer="sgd", epochs=6, width=4, depth=1, seed=1, restore_best_epoch=True)
    kept = train(config, data, device=torch.device("cpu"))
    last = train(config.replace(restore_best_epoch=False), data, device=torch.device("cpu"))
    curve = [h.value for h in kept.history]
    assert curve == [h.value for h in last.history]  # the same training
    best = max(range(len(curve)), key=lambda i: (curve[i], -i))
    assert kept.restored_epoch == best + 1 and kept.values[0] == curve[best]
    assert last.restored_epoch is None and last.values[0] == curve[-1]
    if best + 1 < len(curve):
        # The kept weights are that epoch's: scoring them again gives its value, not the last epoch's.
        from search.data.datasets import prepare
        from search.train.loop import evaluate

        prepared = prepare(data, kept.input_size, "stretch", torch.device("cpu"))
        again = evaluate(kept.model, kept.preprocess, prepared.val_x, prepared.val_y, 10, torch.device("cpu"))
        assert again.accuracy == pytest.approx(curve[best])
    # Registered like the others: ablate switches it off, the doctor proposes it for overfitting.
    assert STRATEGIES.get("restore_best_epoch").off is False
    space = parse_space(tiny_space("rb", params={"restore_best_epoch": {"choices": [False, True]}}))
    assert [(n, off) for n, off, _ in variants(config, space)] == [("restore_best_epoch", False)]
    assert "restore_best_epoch" in [n for n, _ in advised(["overfitting"])]


# ----------------------------------------------------------------------------- dashboard


def test_trial_notes_read_back_through_optuna_dashboard_and_the_read_only_note(workdir: Path) -> None:
    from optuna_dashboard import get_note, wsgi

    from search.tools.dashboard import READ_ONLY_NOTE, read_only

    write_space(workdir / "s.yaml", tiny_space("notes", budget={"n_trials": 1, "max_epochs": 1},
                                               dataset={"name": "digits", "limit": 200},
                                               params={"lr": {"float": [0.001, 0.05], "log": True}, "width": 4}))
    _invoke("run", "s.yaml", "--device", "cpu")
    study = optuna.load_study(study_name="notes", storage=STORAGE)
    (trial,) = study.trials
    note = get_note(optuna.trial.Trial(study, trial._trial_id))  # optuna-dashboard's own reader
    assert note.startswith(f"**accuracy {trial.value:.4f}** on the validation split")
    assert "| class | precision | recall | f1 | images |" in note and "parameters" in note
    assert "**Searched params**" in note and "| lr |" in note and "**Fixed or default**\n\n- optimizer adamw · momentum 0.9" in note

    app = read_only(wsgi(STORAGE))

    def get(path: str, method: str = "GET") -> tuple[str, bytes]:
        seen: dict[str, str] = {}
        body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "x",
                             "SERVER_PORT": "80", "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http"},
                            lambda status, headers, exc=None: seen.update(status=status)))
        return seen["status"], body

    status, body = get(f"/api/studies/{study._study_id}")
    doc = json.loads(body)
    assert status.startswith("200") and doc["note"]["body"].startswith(READ_ONLY_NOTE)
    assert doc["trials"][0]["note"]["body"] == note
    status, page = get("/dashboard")
    assert status.startswith("200") and b"read-only dashboard" in page
    status, _ = get(f"/api/studies/{study._study_id}/note", "PUT")
    assert status.startswith("405")


# ----------------------------------------------------------------------------- doctor wording, run's lines


def test_smallest_classes_are_named_with_their_counts() -> None:
    from search.tools.doctor.data_facts import small_classes

    assert small_classes({"a": 72, "b": 72, "c": 72}).startswith("only 72 training images in each of the 3 classes")
    text = small_classes({"a": 40, "b": 40, "c": 90, "d": 300, "e": 95, "f": 99})
    assert text.startswith("few training images: 'a' 40, 'b' 40, 'c' 90 and 2 more")


def test_budget_line_agrees_with_itself_after_an_interrupted_trial() -> None:
    from search.storage.heartbeat import requeue
    from search.study.runner import budget_line

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    interrupted = study.ask()
    records.record_fail_reason(interrupted, "interrupted")
    frozen = study.tell(interrupted, state=TrialState.FAIL)
    requeue(study, frozen)
    line = budget_line(study, 3)
    assert line.startswith("4 trial(s) so far (complete 2, fail 1, waiting 1)")
    assert "budget 3: 2 used (a failed trial queued again does not count: 1), 1 left" in line
    assert line.endswith(f"next: trial 3 (queued again for trial {frozen.number})")
    assert budget_line(study, 2).endswith("nothing left to run (--n-trials N raises the budget)")
