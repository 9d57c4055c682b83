"""Summaries of a study for people (tables) and machines (JSON): best trial or Pareto front."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.core.config import TrialConfig
from search.core.numbers import readable
from search.space.constraints import closest, is_feasible, total_violation
from search.core.errors import UserError
from search import records
from search.core.spec import SearchSpace
from search.study.stopping import format_stop, stop_reason


def get_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study`` (a one-line error when there is none)."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise UserError(f"study {study.study_name!r} has no trial {number}")


def chosen_config(study: optuna.Study, trial: FrozenTrial | None, action: str) -> tuple[FrozenTrial, TrialConfig]:
    """``trial`` (default: the best) and the complete config it ran with."""
    trial = trial or records.best_trial(study)
    if trial is None:
        near = closest_infeasible(study)
        if near is not None:
            raise UserError(f"study {study.study_name!r} has no trial that meets its constraints; the closest is "
                            f"trial {near.number} ({broken_bounds(near)}); pass --trial {near.number} to {action} it anyway")
        raise UserError(f"study {study.study_name!r} has no completed trial to {action}")
    config = records.trial_config(trial)
    if config is None:
        raise UserError(f"trial {trial.number} has no stored config")
    return trial, config


def closest_infeasible(study: optuna.Study) -> FrozenTrial | None:
    """The trial that breaks the constraints least (None when some completed trial meets them).

    Judged trials are the completed ones and those pruned before training for their size or
    latency (their other metrics are unknown)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if any(is_feasible(t) for t in complete):
        return None
    judged = complete + [t for t in trials if t.state == TrialState.PRUNED and not is_feasible(t)]
    return closest(judged)


def broken_bounds(trial: FrozenTrial) -> str:
    """``latency_ms 7.1 > 5`` for each bound the trial breaks."""
    found = records.violations_of(trial)
    out = []
    for key, v in found.items():
        if v["violation"] > 0:
            op = "<" if ">=" in key else ">"
            out.append(f"{key.split('<=')[0].split('>=')[0]} {v['value']:.4g} {op} {v['bound']:g}")
    return ", ".join(out) or f"total violation {total_violation(trial):.3g}"


def trial_record(trial: FrozenTrial, names: list[str]) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": {"split": "validation", **dict(zip(names, trial.values or []))},
        "params": trial.params,
        **records.result_record(trial),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }


def study_summary(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    names = [o.name for o in space.objectives]
    counts = records.state_counts(study.get_trials(deepcopy=False))
    best = [trial_record(t, names) for t in records.best_trials(study)]
    for rec in best:
        if rec.get("test"):
            rec["test_interval"] = bootstrap_test_metrics(rec["test"], space)
    summary = {
        "study": study.study_name,
        "objectives": [{"name": o.name, "direction": o.direction} for o in space.objectives],
        "dataset": space.dataset.label,
        "trials": counts,
        "best": best,
        "note": "objective values are on the validation split (used for selection); "
                "test metrics hold for this test set only and were never used to select.",
    }
    if space.constraints:
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        summary["constraints"] = {"bounds": [f"{c.metric} {op} {v:g}" for c in space.constraints
                                             for op, v in c.bounds()],
                                  "feasible": sum(1 for t in complete if is_feasible(t)), "complete": len(complete)}
        near = closest_infeasible(study)
        if near is not None:
            summary["closest_infeasible"] = {**trial_record(near, names), "broken": broken_bounds(near)}
    summary["stopped"] = stop_reason(study)
    confirmed = records.confirmed(study)
    if confirmed is not None:
        winner = records.confirmed_winner(study)
        summary["confirmed"] = {**confirmed.to_dict(),
                                "current": winner is not None and winner.number == confirmed.winner}
    return summary


def leaderboard(study: optuna.Study, space: SearchSpace, n: int) -> list[dict[str, Any]]:
    """The ``n`` best completed trials on the first objective (feasible ones; ties: earlier first), each
    with its values, test accuracy, size, latency, epochs trained and the params it searched."""
    names = [o.name for o in space.objectives]
    rows = []
    for rank, t in enumerate(records.top_k(study, n), start=1):
        test = records.metrics(t, "test") or {}
        rows.append({
            "rank": rank, "number": t.number, "values": dict(zip(names, t.values or [])),
            "test_accuracy": test.get("accuracy"), "n_params": t.user_attrs.get(records.N_PARAMS),
            "latency_ms": t.user_attrs.get(records.LATENCY_MS), "epochs": len(records.history(t)) or None,
            "restored_epoch": records.restored_epoch(t),
            "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None, "params": dict(t.params),
        })
    return rows


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a terminal table (values to 4 decimals, params to 3 significant digits)."""
    if not rows:
        return "no completed trial yet"
    names = list(rows[0]["values"])
    head = ["rank", "trial", *names, "test acc", "params", "ms/img", "epochs", "time", "searched params"]
    table = [[str(r["rank"]), str(r["number"]), *(f"{r['values'][k]:.4f}" for k in names),
              _pct(r["test_accuracy"]), "-" if r["n_params"] is None else f"{r['n_params']:,}",
              "-" if r["latency_ms"] is None else readable(float(r["latency_ms"])),
              "-" if r["epochs"] is None else str(r["epochs"]) + (f" (kept {r['restored_epoch']})"
                                                                 if r["restored_epoch"] else ""),
              "-" if r["duration_s"] is None else f"{r['duration_s']:.0f}s",
              " ".join(f"{k}={readable(v)}" for k, v in r["params"].items())] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head[:-1])]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)) + "  " + head[-1]]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table]
    return "\n".join(lines)


def bootstrap_test_metrics(test: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Each quality objective on the test split with a bootstrap 95% interval (resampled test images)."""
    from search.tools.stats import bootstrap_metric
    from search.train.metrics import Metrics, positive_index

    classes = list(test["per_class"])
    metrics = Metrics(confusion=test["confusion"], loss=test["loss"])
    out = {}
    for o in space.objectives:
        if o.direction == "minimize":
            continue  # costs (latency, params) are not test-set estimates
        positive = positive_index(o, classes)
        lo, hi = bootstrap_metric(test["confusion"], o.metric, o.average, positive)
        out[o.name] = {"value": metrics.score(o.metric, o.average, positive), "ci95": [lo, hi], "n": metrics.n}
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_summary(summary: dict[str, Any], details: bool = False) -> str:
    lines = [f"study {summary['study']}  (dataset {summary['dataset']})",
             "trials: " + records.format_counts(sorted(summary["trials"].items()))]
    if summary.get("stopped"):
        lines.append(format_stop(summary["stopped"]))
    cons = summary.get("constraints")
    if cons:
        lines.append(f"constraints (validation split): {', '.join(cons['bounds'])}; "
                     f"{cons['feasible']} of {cons['complete']} completed trial(s) meet them")
    best = summary["best"]
    near = summary.get("closest_infeasible")
    if not best and near is not None:
        lines.append(f"no trial meets the constraints; the closest is trial {near['number']}: {near['broken']}")
        lines.append("  " + "  ".join(f"{k}={v:.4f}" for k, v in near["values"].items() if k != "split")
                     + "   [validation split]")
        return "\n".join(lines)
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
            lines.append(f"    {k:<{width}}  {readable(v)}")
        for name, t in rec.get("test_interval", {}).items():
            lines.append(f"  test {name} {t['value']:.4f}, 95% CI [{t['ci95'][0]:.4f}, {t['ci95'][1]:.4f}] "
                         f"(bootstrap over the {t['n']} test images; it holds for this test set only)")
        test = rec.get("test")
        if test:
            lines.append(f"  test split: accuracy {_pct(test['accuracy'])}  precision {_pct(test['precision_macro'])}"
                         f"  recall {_pct(test['recall_macro'])}  f1 {_pct(test['f1_macro'])}  (n={test['n']})")
        lines.append(f"  params {rec['n_params']:,}  epoch {readable(rec['epoch_seconds'])} s  "
                     f"latency {readable(rec['latency_ms'])} ms/image" if rec.get("n_params") is not None else "")
        if rec.get("device"):
            lines.append(f"  measured on {rec['device']}: latency on another machine differs")
        if details and rec.get("validation"):
            lines.extend(_details(rec))
    if summary.get("confirmed"):
        confirmed = records.ConfirmationRecord.from_dict(summary["confirmed"])
        top = confirmed.rows[0]
        lines.append("")
        if summary["confirmed"]["current"]:
            lines.append(f"confirmed winner: trial {confirmed.winner}, mean {top.mean:.4f} (sd {top.std:.4f}) "
                         f"over {len(confirmed.seeds)} fresh seeds (strategy-search confirm)")
        else:
            lines.append("a trial finished after `strategy-search confirm` beats every confirmed candidate: "
                         "run confirm again")
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
