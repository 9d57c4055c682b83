"""search.records owns what a study stores: no key spelled elsewhere, ranking in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
    assert ours <= {"search.core.config", "search.space.constraints"}, ours
    assert {m.split(".")[0] for m in imported if m} <= {"__future__", "collections", "math", "typing", "optuna", "search"}


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
    records.record_confirmed(study, {"winner": 2, "rows": [{"trial": 1, "original": 0.9},
                                                          {"trial": 2, "original": 0.8}]})
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
