"""search.records owns what a study stores: no key spelled elsewhere, ranking in one place."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search import records

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "search" / "records" / "trials.py"

# An attribute key written as a string literal where an attr is set, read or tested.
LITERAL_KEY = [
    re.compile(r"""set_(?:trial_|study_)?(?:user|system)_attr\((?:[^,()]+,\s*)?["']"""),  # set_user_attr("x", ...)
    re.compile(r"""(?:user|system)_attrs(?:\.get)?\s*[\[(]\s*["']"""),  # user_attrs["x"], user_attrs.get("x")
    re.compile(r"""["'][\w:-]+["']\s+(?:not\s+)?in\s+[\w.]*(?:user|system)_attrs"""),  # "x" in t.user_attrs
    re.compile(r"""(?:user|system)_attrs\s*=\s*\{\s*["']"""),  # create_trial(user_attrs={"x": ...})
    re.compile(r"""^\s*[A-Z_]*_ATTR\s*=\s*["']""", re.M),  # a key constant of its own
]


def _offences(text: str) -> list[str]:
    return [m.group(0) for pattern in LITERAL_KEY for m in pattern.finditer(text)]


def test_no_attribute_key_is_spelled_outside_records() -> None:
    found = {}
    for path in sorted((ROOT / "search").rglob("*.py")):
        if path == RECORDS:
            continue
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        hits = _offences(text)
        if hits:
            found[rel] = hits
    assert found == {}, f"attribute keys spelled outside search/records/trials.py: {found}"


@pytest.mark.parametrize("line", [
    'trial.set_user_attr("fail_reason", reason)',
    'storage.set_trial_user_attr(trial_id, "fail_reason", why)',
    'x = t.user_attrs.get("config")',
    'x = t.user_attrs["history"]',
    'if "worker" in trial.user_attrs:',
    'n = frozen.system_attrs.get("retry_history", [])',
    'optuna.create_trial(user_attrs={"warm_start": 1})',
    'STOP_ATTR = "stop_reason"',
])
def test_the_check_catches_each_way_of_spelling_a_key(line: str) -> None:
    assert _offences(line), line
    assert not _offences(line.replace('"', "").replace("'", ""))  # (the same code with a constant passes)


def test_records_imports_only_optuna_and_the_plain_layers() -> None:
    tree = ast.parse(RECORDS.read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m and m.split(".")[0] == "search"}
    assert ours <= {"search.core.config", "search.space.constraints", "search.records.retraining"}, ours
    assert {m.split(".")[0] for m in imported if m} <= {"__future__", "collections", "logging", "math", "typing",
                                                        "optuna", "search"}


def _study(values: list[float | None], *, direction: str = "maximize",
           infeasible: tuple[int, ...] = ()) -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for i, v in enumerate(values):
        state = TrialState.FAIL if v is None else TrialState.COMPLETE
        study.add_trial(optuna.create_trial(
            state=state, values=None if v is None else [v], user_attrs={records.CONFIG: {"seed": i}},
            constraints={"c": 1.0 if i in infeasible else -1.0}))
    return study


@pytest.mark.parametrize("direction,order", [("maximize", [3, 1, 4, 0]), ("minimize", [0, 1, 4, 3])])
def test_ranking_by_the_first_objective_skips_infeasible_and_failed_trials(direction: str, order: list[int]) -> None:
    # Trial 2 failed, trial 5 is the best but breaks a constraint; trials 1 and 4 tie (the earlier first).
    study = _study([0.1, 0.5, None, 0.9, 0.5, 0.99], direction=direction, infeasible=(5,))
    assert [t.number for t in records.top_k(study, 10)] == order
    assert [t.number for t in records.top_k(study, 2)] == order[:2]
    assert records.best_trial(study).number == order[0]
    assert [t.number for t in records.top_k(study, 10, feasible=False)][0] == (5 if direction == "maximize" else 0)
    assert records.top_numbers([(t.number, t.values) for t in study.trials], direction == "maximize", 2) \
        == ({5, 3} if direction == "maximize" else {0, 1})


def test_confirmed_winner_is_preferred_until_a_new_trial_beats_every_candidate() -> None:
    study = _study([0.5, 0.9, 0.8])
    records.record_confirmed(study, _confirmation(winner=2, originals={1: 0.9, 2: 0.8}))
    assert records.confirmed_winner(study).number == 2 and records.best_trial(study).number == 2
    study.add_trial(optuna.create_trial(values=[0.95], constraints={"c": -1.0}))
    assert records.confirmed_winner(study) is None and records.best_trial(study).number == 3


def test_writers_and_readers_agree() -> None:
    study = optuna.create_study()
    trial = study.ask()
    records.record_fail_reason(trial, "first")
    records.record_fail_reason(trial, "second", keep_first=True)
    records.record_worker(trial, "host:1")
    records.record_pruned(trial, [{"epoch": 1, "value": 0.5}], 1)
    frozen = study.tell(trial, state=TrialState.FAIL)
    assert records.fail_reason(frozen) == "first" and records.worker(frozen) == "host:1"
    assert records.history(frozen) == [{"epoch": 1, "value": 0.5}] and records.pruned_at_epoch(frozen) == 1
    assert records.trial_config(frozen) is None and records.retry_history(frozen) == []
    retry = records.retry_system_attrs(frozen)
    assert retry == {records.FAILED_TRIAL: frozen.number, records.RETRY_HISTORY: [frozen.number]}


# ----------------------------------------------------------------------------- ablate's and confirm's records


def _confirmation(winner: int, originals: dict[int, float]) -> records.ConfirmationRecord:
    """A confirmation of the trials ``originals`` names (their single-run values), ``winner`` first."""
    order = sorted(originals, key=lambda n: n != winner)
    rows = tuple(records.ConfirmationRow(trial=n, original=originals[n], values=(0.8, 0.82), mean=0.81, std=0.014,
                                         ci95=(0.68, 0.94), diverged=0, rank=rank)
                 for rank, n in enumerate(order, 1))
    return records.ConfirmationRecord(objective="accuracy", direction="maximize", seeds=(10000, 10001),
                                      budget_epochs=None, rows=rows, winner=winner, single_run_best=order[0],
                                      changed=False, seconds=1.0)


# As `strategy-search ablate` and `confirm` store them today (keys, order and value types), with the cases
# that leave keys out: a variant that diverged on every seed has no mean, std, delta or ci95.
ABLATION_TODAY = {
    "trial": 3, "objective": "accuracy", "direction": "maximize", "split": "validation", "seeds": [10000, 10001],
    "epochs": 2, "trial_epochs": 5, "confidence": 0.95,
    "interval": "Welch t-interval of the difference of means (variant - best config)",
    "reference": {"values": [0.8, 0.9], "diverged": 0, "mean": 0.85, "std": 0.07071067811865471},
    "rows": [
        {"param": "color", "best": "rgb", "switched_to": "gray", "values": [0.07407407407407407, 0.16666666666666666],
         "diverged": 0, "mean": 0.12037037037037036, "std": 0.0654728501098655, "delta": -0.7296296296296296,
         "ci95": [-0.9886357643279303, -0.47062349493132897], "verdict": "mattered"},
        {"param": "augment", "best": ["flip", "crop"], "switched_to": "none", "values": [None, None], "diverged": 2,
         "verdict": "mattered"},
        {"param": "dropout", "best": 0.2, "switched_to": 0.0, "values": [0.81, None], "diverged": 1, "mean": 0.81,
         "std": 0.0, "verdict": "unknown"},
    ],
    "resumed_runs": 4, "seconds": 3.1,
    "advice": {"undecided": ["color"], "suggested_seeds": 3, "tiny": [], "median_half_width": 0.3682653939575599,
               "message": "1 verdict(s) undecided with 2 seeds: color moved the objective, ..."},
}
CONFIRMATION_TODAY = {
    "objective": "accuracy", "direction": "maximize", "split": "validation", "seeds": [10000, 10001, 10002],
    "budget_epochs": 2, "confidence": 0.95,
    "rows": [
        {"trial": 4, "original": 0.86, "values": [0.84, 0.85, 0.83], "mean": 0.84, "std": 0.01,
         "ci95": [0.8151589897, 0.8648410103], "diverged": 0, "epochs": 2, "trial_epochs": 6, "rank": 1},
        {"trial": 1, "original": 0.9, "values": [None, None, None], "mean": None, "std": None, "ci95": None,
         "diverged": 3, "epochs": 2, "trial_epochs": 4, "rank": 2},
    ],
    "winner": 4, "single_run_best": 1, "changed": True, "resumed_runs": 0, "seconds": 12.5,
    "advice": {"suggested_seeds": None, "message": "trials 4 and 1 are too close to rank apart with seeds ..."},
}
RERUN_TODAY = {"value": 0.2222222222222222, "label": "best config", "seed": 10000, "epochs": 1, "seconds": 6.05}


@pytest.mark.parametrize("kind,stored", [
    (records.AblationRecord, ABLATION_TODAY), (records.ConfirmationRecord, CONFIRMATION_TODAY),
    (records.RerunEntry, RERUN_TODAY),
])
def test_a_stored_record_of_todays_shape_round_trips_unchanged(kind: Any, stored: dict[str, Any]) -> None:
    typed = kind.from_dict(stored)
    assert typed.to_dict() == stored
    # Byte for byte as `ablate --json` / `confirm --json` / `best --json` print it: the same keys in the same order.
    assert json.dumps(typed.to_dict(), indent=2, default=str) == json.dumps(stored, indent=2, default=str)
    assert kind.from_dict(json.loads(json.dumps(typed.to_dict()))) == typed


def test_records_written_today_read_back_typed_from_the_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="typed", storage=storage, direction="maximize")
    # Written as today's code writes them: plain JSON in the study's user attrs.
    study.set_user_attr(records.ABLATION, ABLATION_TODAY)
    study.set_user_attr(records.CONFIRMED, CONFIRMATION_TODAY)
    study.set_user_attr(records.RERUNS, {"k1": RERUN_TODAY})
    study = optuna.load_study(study_name="typed", storage=storage)

    ablation = records.ablation(study)
    assert isinstance(ablation, records.AblationRecord)
    assert ablation.trial == 3 and ablation.seeds == (10000, 10001) and ablation.trial_epochs == 5
    color, augment, dropout = ablation.rows
    assert color.ci95 == (-0.9886357643279303, -0.47062349493132897) and color.verdict == "mattered"
    assert augment.best == ["flip", "crop"] and augment.mean is None and augment.delta is None
    assert dropout.mean == 0.81 and dropout.delta is None
    assert ablation.reference.mean == 0.85 and ablation.advice is not None and ablation.advice.suggested_seeds == 3

    confirmation = records.confirmed(study)
    assert isinstance(confirmation, records.ConfirmationRecord)
    assert [r.trial for r in confirmation.rows] == [4, 1] and confirmation.winner == 4 and confirmation.changed
    assert confirmation.rows[1].ci95 is None and confirmation.advice is not None
    assert confirmation.advice.suggested_seeds is None

    assert records.reruns(study) == {"k1": records.RerunEntry(value=0.2222222222222222, label="best config",
                                                              seed=10000, epochs=1, seconds=6.05)}
    # Written back through the one writer: the stored JSON is what it was.
    records.record_ablation(study, ablation)
    records.record_confirmed(study, confirmation)
    records.record_rerun(study, "k2", records.RerunEntry(value=None, label="trial 4", seed=10001, epochs=2,
                                                         seconds=0.5))
    attrs = optuna.load_study(study_name="typed", storage=storage).user_attrs
    assert attrs[records.ABLATION] == ABLATION_TODAY and attrs[records.CONFIRMED] == CONFIRMATION_TODAY
    assert attrs[records.RERUNS] == {"k1": RERUN_TODAY, "k2": {"value": None, "label": "trial 4", "seed": 10001,
                                                                "epochs": 2, "seconds": 0.5}}


def test_a_record_of_an_older_version_reads_with_defaults_for_newer_keys() -> None:
    from search.tools.ablate import format_ablation
    from search.tools.confirm import format_confirmation

    # The first versions stored neither trial_epochs, resumed_runs nor advice, nor a confirmation row's epochs.
    old_ablation = {k: v for k, v in ABLATION_TODAY.items() if k not in ("trial_epochs", "resumed_runs", "advice")}
    old_confirmation = {k: v for k, v in CONFIRMATION_TODAY.items() if k not in ("resumed_runs", "advice")}
    old_confirmation["rows"] = [{k: v for k, v in r.items() if k not in ("epochs", "trial_epochs")}
                                for r in CONFIRMATION_TODAY["rows"]]
    ablation = records.AblationRecord.from_dict(old_ablation)
    assert (ablation.trial_epochs, ablation.resumed_runs, ablation.advice) == (None, 0, None)
    assert len(ablation.rows) == 3 and ablation.rows[0].delta == -0.7296296296296296
    assert "2 epochs per run, as trial 3 trained" in format_ablation(ablation)
    confirmation = records.ConfirmationRecord.from_dict(old_confirmation)
    assert (confirmation.resumed_runs, confirmation.advice) == (0, None)
    assert [(r.epochs, r.trial_epochs) for r in confirmation.rows] == [(None, None), (None, None)]
    table = format_confirmation(confirmation)
    assert "     1      4       -       0.860   0.840" in table and "winner: trial 4 (the single-run best" in table
    # Keys a newer version may add are ignored.
    assert records.ConfirmationRecord.from_dict({**CONFIRMATION_TODAY, "later_key": 1}).to_dict() == CONFIRMATION_TODAY


def test_a_record_this_version_cannot_read_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="the ablation record has no 'rows'"):
        records.AblationRecord.from_dict({k: v for k, v in ABLATION_TODAY.items() if k != "rows"})
    with pytest.raises(ValueError, match="a confirmation row has no 'original'"):
        records.ConfirmationRecord.from_dict({**CONFIRMATION_TODAY, "rows": [{"trial": 1}]})
    study = optuna.create_study()
    study.set_user_attr(records.ABLATION, "not a record")
    study.set_user_attr(records.CONFIRMED, {"winner": 1})
    study.set_user_attr(records.RERUNS, {"good": RERUN_TODAY, "bad": {"label": "x"}})
    assert records.ablation(study) is None and records.confirmed(study) is None
    assert records.confirmed_winner(study) is None
    assert list(records.reruns(study)) == ["good"]
    assert "ignoring the study's 'ablation' record" in caplog.text and "has no 'value'" in caplog.text
