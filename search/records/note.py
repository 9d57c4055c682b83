"""A finished trial's note for optuna-dashboard: its records as short Markdown that reads well on the
trial's page (metrics, per-class table, size, latency, the curve, the config), instead of raw JSON.

optuna-dashboard shows a trial's note from the study's system attrs (its ``_note`` module): a
version ``dashboard:{trial_id}:note_ver`` and the text in chunks of at most 2045 characters under
``dashboard:{trial_id}:note_str:{i}``. :func:`note_keys` gives those keys for the worker to write
directly (``search.study.runner``), because
``optuna_dashboard.save_note`` reads every system attr of the study first (its cost grows with the
study) and importing optuna_dashboard takes seconds a worker should not pay.
``tests/test_dashboard_notes.py`` reads a note back with ``optuna_dashboard.get_note`` so a format
change there fails a test here.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search.core.numbers import readable
from search.records import trials as keys

NOTE_CHUNK = 2045  # optuna_dashboard._note.SYSTEM_ATTR_MAX_LENGTH
CLASS_ROWS = 20  # per-class rows shown (the weakest recall first when there are more classes)
FIXED_PER_LINE = 5  # fixed or default params per bullet


def note_keys(trial_id: int, body: str) -> dict[str, Any]:
    """The study system attrs that hold ``body`` as trial ``trial_id``'s first note version."""
    attrs: dict[str, Any] = {keys.NOTE_VERSION.format(trial_id=trial_id): 1}
    for i in range(max(1, math.ceil(len(body) / NOTE_CHUNK))):
        attrs[keys.NOTE_TEXT.format(trial_id=trial_id, i=i)] = body[i * NOTE_CHUNK:(i + 1) * NOTE_CHUNK]
    return attrs


def has_note(study_system_attrs: dict[str, Any], trial_id: int) -> bool:
    """Whether the trial has a note already (e.g. one written in the dashboard)."""
    return keys.NOTE_VERSION.format(trial_id=trial_id) in study_system_attrs


def _f(v: Any, digits: int = 4) -> str:
    return "-" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.{digits}f}"


def _g(v: Any) -> str:
    return readable(v)


def trial_note(trial: FrozenTrial, objective_names: list[str]) -> str:
    """The Markdown note of a finished trial."""
    attrs = trial.user_attrs
    val, test = attrs.get(keys.VAL) or {}, attrs.get(keys.TEST) or {}
    lines: list[str] = []
    if trial.state == TrialState.COMPLETE and trial.values:
        values = " · ".join(f"**{n} {v:.4f}**" for n, v in zip(objective_names, trial.values))
        lines.append(f"{values} on the validation split" + (f" (n={val['n']})" if val.get("n") else "")
                     + (f" · test accuracy {test['accuracy']:.4f} (n={test['n']}; this test set only)"
                        if test.get("accuracy") is not None else ""))
    elif trial.state == TrialState.PRUNED:
        at = attrs.get(keys.PRUNED_AT_EPOCH)
        last = trial.intermediate_values.get(at) if at else None
        name = objective_names[0] if objective_names else "objective"
        lines.append(f"**Pruned**{f' at epoch {at}' if at else ''}"
                     + (f" ({name} {last:.4f} on the validation split)" if isinstance(last, float) else "")
                     + (f": {attrs[keys.FAIL_REASON]}" if attrs.get(keys.FAIL_REASON) else
                        ": the pruner judged it unpromising against the trials before it"))
    elif trial.state == TrialState.FAIL:
        lines.append(f"**Failed**: {attrs.get(keys.FAIL_REASON, 'no reason recorded')}")
    if val.get("accuracy") is not None:
        lines += ["", "| metric | validation | test |", "|---|---|---|"]
        for label, key in (("accuracy", "accuracy"), ("precision (macro)", "precision_macro"),
                           ("recall (macro)", "recall_macro"), ("f1 (macro)", "f1_macro"), ("loss", "loss")):
            lines.append(f"| {label} | {_f(val.get(key))} | {_f(test.get(key)) if test else '-'} |")
    per_class = val.get("per_class") or {}
    if per_class:
        support = {c: sum(row) for c, row in zip(per_class, val.get("confusion") or [])}
        shown = list(per_class.items())
        more = ""
        if len(shown) > CLASS_ROWS:
            shown = sorted(shown, key=lambda item: item[1].get("recall", 0.0))[:CLASS_ROWS]
            more = f" ({CLASS_ROWS} of {len(per_class)} classes, the lowest recall first)"
        lines += ["", f"**Per class** (validation){more}", "", "| class | precision | recall | f1 | images |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c} | {_f(m.get('precision'), 3)} | {_f(m.get('recall'), 3)} | {_f(m.get('f1'), 3)} | "
                  f"{support.get(c, '-')} |" for c, m in shown]
    model = []
    if attrs.get(keys.N_PARAMS) is not None:
        n = int(attrs[keys.N_PARAMS])
        model.append(f"{n:,} parameters (~{n * 4 / 1e6:.2g} MB as float32)")
    if attrs.get(keys.LATENCY_MS) is not None:
        model.append(f"{_g(float(attrs[keys.LATENCY_MS]))} ms per image"
                     + (f" on {attrs[keys.DEVICE]}" if attrs.get(keys.DEVICE) else ""))
    if attrs.get(keys.EPOCH_SECONDS) is not None:
        model.append(f"{_g(float(attrs[keys.EPOCH_SECONDS]))} s per epoch")
    history = attrs.get(keys.HISTORY) or []
    if history:
        kept = attrs.get(keys.RESTORED_EPOCH)
        model.append(f"{len(history)} epochs" + (f" (weights of epoch {kept} kept)" if kept else ""))
    if model:
        lines += ["", "**Model**", ""] + [f"- {part}" for part in model]  # (one line would run off the page)
    if history:
        curve = " ".join(f"{h.get('value', math.nan):.3f}" for h in history[-30:])
        first = "" if len(history) <= 30 else f" (last 30 of {len(history)})"
        lines += ["", f"**Validation {objective_names[0] if objective_names else 'objective'} by epoch**{first}: "
                      f"{curve}"]
    config = attrs.get(keys.CONFIG) or {}
    if config:
        searched = [k for k in config if k in trial.params]
        if searched:
            lines += ["", "**Searched params**", "", "| param | value |", "|---|---|"]
            lines += [f"| {k} | {_g(config[k])} |" for k in searched]
        rest = [f"{k} {_g(v)}" for k, v in config.items() if k not in trial.params]
        # A few per bullet: one long line would run off the trial page (it does not wrap there).
        lines += ["", "**Fixed or default**", ""] + [f"- {' · '.join(rest[i:i + FIXED_PER_LINE])}"
                                                       for i in range(0, len(rest), FIXED_PER_LINE)]
    return "\n".join(lines) + "\n"
