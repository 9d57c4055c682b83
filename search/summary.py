"""Summaries of a study for people (tables) and machines (JSON): best trial or Pareto front."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space import SearchSpace


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective) or the Pareto front (several)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    return [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """One trial to ship: the best, or on a Pareto front the one best on the first objective."""
    front = best_trials(study)
    if not front:
        return None
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(front, key=lambda t: sign * t.values[0])


def trial_record(trial: FrozenTrial, names: list[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": {"split": "validation", **dict(zip(names, trial.values or []))},
        "params": trial.params,
        "config": attrs.get("config"),
        "validation": attrs.get("val"),
        "test": attrs.get("test"),
        "n_params": attrs.get("n_params"),
        "epoch_seconds": attrs.get("epoch_seconds"),
        "latency_ms": attrs.get("latency_ms"),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }


def study_summary(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    names = [o.name for o in space.objectives]
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return {
        "study": study.study_name,
        "objectives": [{"name": o.name, "direction": o.direction} for o in space.objectives],
        "dataset": space.dataset.label,
        "trials": counts,
        "best": [trial_record(t, names) for t in best_trials(study)],
        "note": "objective values are on the validation split (used for selection); "
                "test metrics hold for this test set only and were never used to select.",
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_summary(summary: dict[str, Any], details: bool = False) -> str:
    lines = [f"study {summary['study']}  (dataset {summary['dataset']})",
             "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(summary["trials"].items()))]
    best = summary["best"]
    if not best:
        lines.append("no completed trial yet")
        return "\n".join(lines)
    lines.append("best trial" if len(best) == 1 else f"Pareto front ({len(best)} trials)")
    for rec in best:
        lines.append("")
        values = "  ".join(f"{k}={v:.4f}" for k, v in rec["values"].items() if k != "split")
        lines.append(f"  trial {rec['number']}: {values}   [validation split]")
        width = max((len(k) for k in rec["params"]), default=0)
        for k, v in rec["params"].items():
            lines.append(f"    {k:<{width}}  {v}")
        test = rec.get("test")
        if test:
            lines.append(f"  test split: accuracy {_pct(test['accuracy'])}  precision {_pct(test['precision_macro'])}"
                         f"  recall {_pct(test['recall_macro'])}  f1 {_pct(test['f1_macro'])}  (n={test['n']})")
        lines.append(f"  params {rec['n_params']:,}  epoch {rec['epoch_seconds']}s  latency {rec['latency_ms']} ms/image"
                     if rec.get("n_params") is not None else "")
        if details and rec.get("validation"):
            lines.extend(_details(rec))
    lines.append("")
    lines.append("note: " + summary["note"])
    return "\n".join(line for line in lines if line is not None)


def _details(rec: dict[str, Any]) -> list[str]:
    out = []
    for split in ("validation", "test"):
        m = rec.get(split)
        if not m:
            continue
        classes = list(m["per_class"])
        w = max(8, *(len(c) for c in classes))
        out.append(f"  {split} per class:")
        out.append(f"    {'class':<{w}}  precision  recall  f1")
        for c, v in m["per_class"].items():
            out.append(f"    {c:<{w}}  {v['precision']:9.4f}  {v['recall']:6.4f}  {v['f1']:.4f}")
        out.append(f"  {split} confusion matrix (rows: true, columns: predicted):")
        out.append("    " + " " * w + "  " + " ".join(f"{c[:6]:>6}" for c in classes))
        for c, row in zip(classes, m["confusion"]):
            out.append(f"    {c:<{w}}  " + " ".join(f"{n:>6}" for n in row))
    return out
