"""Each section's content, computed once from the study: plain :mod:`search.tools.report.data` objects.

One function per section, ``(view, section id, title) -> SectionData``; the section list that
names them is :data:`search.tools.report.sections.SECTION_DEFS`.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from optuna.trial import TrialState

from search.space.constraints import is_feasible
from search.core.spec import choice_label
from search import records
from search.study.stopping import format_stop, stop_reason
from search.tools.summary import broken_bounds, closest_infeasible
from search.records import format_counts, state_counts
from search.tools.report.data import (Confusion, Curve, Curves, Intervals, Line, SectionData, Split, StudyView, Table,
                                Text)

TOP_TRIALS = 5  # learning curves shown side by side


def summary(s: StudyView, sid: str, title: str) -> SectionData:
    counts = state_counts(s.trials)
    rows = [("study", s.study.study_name), ("dataset", s.space.dataset.label),
            ("objectives", ", ".join(f"{o.name} ({o.direction}, validation split)" for o in s.space.objectives)),
            ("trials", format_counts(sorted(counts.items())) or "none")]
    stopped = format_stop(stop_reason(s.study))
    if stopped:
        rows.append(("stopped", stopped))
    infeasible = [t for t in s.complete if not is_feasible(t)]
    # Pruned with constraint values: stopped before training for their size or latency.
    untrained = [t for t in s.trials if t.state == TrialState.PRUNED and not is_feasible(t)]
    if s.space.constraints:
        rows.append(("constraints", ", ".join(f"{c.metric} {op} {v:g}" for c in s.space.constraints
                                              for op, v in c.bounds())
                     + f" (validation split): {len(s.complete) - len(infeasible)} of {len(s.complete)} completed "
                       "trials meet them"))
        if untrained:
            rows.append(("stopped before training", f"{len(untrained)} trials whose model broke a size or "
                                                    "latency bound (no epoch spent on them)"))
        near = closest_infeasible(s.study)
        if near is not None:
            rows.append(("no feasible trial", f"the closest is trial {near.number}: {broken_bounds(near)}"))
    if s.best is not None:
        values = ", ".join(f"{o.name} {v:.4f}" for o, v in zip(s.space.objectives, s.best.values))
        rows.append(("best trial", f"{s.best.number}: {values}"))
        rows.append(("its params", ", ".join(f"{k}={_short(v)}" for k, v in s.best.params.items()) or "none searched"))
        test = records.metrics(s.best, "test")
        if test:
            rows.append(("its test split", f"accuracy {test['accuracy']:.4f}, f1 (macro) {test['f1_macro']:.4f} "
                                           f"(n={test['n']}; see the caveat)"))
    data = SectionData(sid, title, [Table(["", ""], rows, show_header=False, table_id="summary-table")])
    if infeasible or untrained:
        data.blocks.append(Text("INFEASIBLE trials break the constraints: they are never the best, exported or "
                                "confirmed."))
        shown = [t for t in infeasible if records.has_violations(t) or t.constraints] + untrained
        data.blocks.append(Table(["trial", s.objective, "breaks"],
                                 [(f"{t.number} INFEASIBLE", f"{t.values[0]:.4f}" if t.values else "not trained",
                                   broken_bounds(t)) for t in sorted(shown, key=lambda t: t.number)],
                                 table_id="infeasible-table"))
    return data


def history(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    if not s.complete:
        data.blocks.append(Text("no completed trial yet"))
        return data
    # Optuna draws its own best-value line only without a target, which several objectives need:
    # draw it here, on the first objective, in the direction the study optimizes it.
    numbers, best = best_so_far(s)
    if len(s.space.objectives) > 1:
        data.blocks.append(Text(f"the line is the best {s.objective} so far (the first objective); "
                                "the other objectives trade off against it on the Pareto front."))
    data.figure = s.optuna_plot("plot_optimization_history", line=Line(numbers, best, f"best {s.objective} so far"))
    return data


def best_so_far(s: StudyView) -> tuple[list[int], list[float]]:
    """Trial numbers of the completed trials and the best first-objective value up to each."""
    numbers: list[int] = []
    best: list[float] = []
    pick = max if s.maximize else min
    for t in sorted(s.complete, key=lambda t: t.number):
        best.append(pick(best[-1], t.values[0]) if best else t.values[0])
        numbers.append(t.number)
    return numbers, best


def importance(s: StudyView, sid: str, title: str) -> SectionData:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    data = SectionData(sid, title)
    varied = [p.name for p in s.space.params if p.kind != "fixed"]
    if len(s.complete) < 2 or not varied:
        why = "fewer than 2 completed trials" if len(s.complete) < 2 else "no searched params"
        data.blocks.append(Text(f"fANOVA importances need at least 2 completed trials with searched params ({why})."))
        return data
    try:
        importances = get_param_importances(s.study, evaluator=FanovaImportanceEvaluator(seed=0), target=s.target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        data.blocks.append(Text(f"fANOVA importances could not be computed: {exc}"))
        return data
    if not importances:
        data.blocks.append(Text("fANOVA found no param that varies across the completed trials."))
        return data
    data.blocks.append(Text(f"fANOVA over {len(s.complete)} completed trials (target: {s.objective}); only params "
                            "present in every completed trial take part. Few trials make these estimates rough: "
                            "optuna-dashboard's importances (PED-ANOVA) can rank the same trials differently."))
    data.figure = s.optuna_plot("plot_param_importances", fanova_seed=0)
    return data


def _param_plot(s: StudyView, sid: str, title: str, plot_name: str) -> SectionData:
    """An Optuna param plot, once params were searched."""
    data = SectionData(sid, title)
    if not s.complete or not s.complete[0].params:
        data.blocks.append(Text("no completed trial with searched params yet"))
        return data
    data.figure = s.optuna_plot(plot_name)
    return data


def parallel(s: StudyView, sid: str, title: str) -> SectionData:
    return _param_plot(s, sid, title, "plot_parallel_coordinate")


def learning_curves(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    top = [t for t in s.ranked() if records.history(t)][:TOP_TRIALS]
    if not top:
        data.blocks.append(Text("no completed trial with a training history yet"))
        return data
    metric = f"validation {s.objective}"
    curves = []
    for t in top:
        hist = records.history(t)
        curves.append(Curve(t.number, f"trial {t.number} ({s.objective} {t.values[0]:.4f})",
                            [h["epoch"] for h in hist], [h["train_loss"] for h in hist], [h["value"] for h in hist]))
    data.blocks.append(Text(f"the {len(top)} best completed trials by {metric}; per-epoch values as recorded "
                            "during the search."))
    data.figure = Curves(metric, curves)
    return data


def confusion(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    best = s.best
    found = [(name, records.metrics(best, name)) for name in ("validation", "test")] if best is not None else []
    found = [(name, m) for name, m in found if m and m.get("confusion")]
    if not found:
        data.blocks.append(Text("no completed trial with metrics yet"))
        return data
    assert best is not None
    data.title = f"{title} (trial {best.number})"
    data.blocks.append(Text("rows: true class, columns: predicted class."))
    data.figure = Confusion(list(found[0][1]["per_class"]),
                            [Split(name, m["n"], m["accuracy"], m["confusion"]) for name, m in found])
    return data


def strategy_effect_rows(s: StudyView) -> list[dict[str, Any]]:
    """For each categorical param and each of its choices: trials, best and median objective."""
    rows: list[dict[str, Any]] = []
    for p in s.space.params:
        if p.kind != "choices":
            continue
        for choice in p.choices:
            label = choice_label(choice)
            used = [t for t in s.trials if p.name in t.params and t.params[p.name] == label]
            values = [t.values[0] for t in used if t.state == TrialState.COMPLETE and t.values]
            pick = max if s.maximize else min
            rows.append({
                "param": p.name, "choice": str(label), "trials": len(used), "complete": len(values),
                "pruned_or_failed": sum(t.state in (TrialState.PRUNED, TrialState.FAIL) for t in used),
                "best": pick(values) if values else None,
                "median": statistics.median(values) if values else None,
            })
    return rows


def strategy_effect(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    rows = strategy_effect_rows(s)
    if not rows:
        data.blocks.append(Text("the space has no categorical strategy choice ({choices: [...]})"))
        return data
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    data.blocks.append(Text(f"for each categorical choice, the best and median validation {s.objective} of the "
                            "completed trials that used it. Choices share trials with every other param, so read "
                            "this as association, not a controlled comparison."))
    data.blocks.append(Table(["param", "choice", "trials", "completed", "pruned/failed", f"best {s.objective}",
                              f"median {s.objective}"],
                             [(r["param"], r["choice"], r["trials"], r["complete"], r["pruned_or_failed"],
                               fmt(r["best"]), fmt(r["median"])) for r in rows], table_id="strategy-effect-table"))
    return data


def _intervals(labels: list[str], centers: list[float], intervals: Sequence[Sequence[float] | None], axis: str,
               **kwargs: Any) -> Intervals:
    lo = [c - i[0] if i else 0.0 for c, i in zip(centers, intervals)]
    hi = [i[1] - c if i else 0.0 for c, i in zip(centers, intervals)]
    return Intervals(labels, centers, lo, hi, axis, **kwargs)


def ablation(s: StudyView, sid: str, title: str) -> SectionData:
    from search.tools.ablate import epochs_note, row_label

    data = SectionData(sid, title)
    record = records.ablation(s.study)
    rows = [r for r in (record.rows if record else ()) if r.delta is not None]
    if not rows:
        data.blocks.append(Text(f"no ablation stored; run: strategy-search ablate {s.study.study_name}"))
        return data
    assert record is not None
    if s.best is not None and s.best.number != record.trial:
        data.title = f"{title} (STALE: of trial {record.trial}, no longer the best)"
        data.blocks.append(Text(f"STALE: this ablation is of trial {record.trial}, which is no longer the best "
                                f"trial (trial {s.best.number} is); run strategy-search ablate "
                                f"{s.study.study_name} again to ablate the best.", note=False))
    labels = [row_label(r) for r in rows]
    data.figure = _intervals(labels, [r.delta for r in rows], [r.ci95 for r in rows],
                             f"change in validation {record.objective} (variant - best config)", zero_line=True)
    data.blocks.append(Text(f"trial {record.trial} re-trained with each strategy switched off, over "
                            f"{len(record.seeds)} seeds, {epochs_note(record)}; bars are {record.interval} at "
                            f"{record.confidence:.0%}. A bar that does not cross 0 marks a strategy that really "
                            "mattered."))
    if record.advice is not None:
        data.blocks.append(Text(f"warning: {record.advice.message}", note=False))
    data.blocks.append(Table(["strategy switched off", "delta", "95% CI", "verdict"],
                             [(lab, f"{r.delta:+.3f}", f"[{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}]" if r.ci95 else "-",
                               r.verdict) for lab, r in zip(labels, rows)], table_id="ablation-table"))
    return data


def confirmed(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    record = records.confirmed(s.study)
    rows = [r for r in (record.rows if record else ()) if r.mean is not None]
    if not rows:
        data.blocks.append(Text(f"no confirmation stored; run: strategy-search confirm {s.study.study_name}"))
        return data
    assert record is not None
    data.figure = _intervals([f"#{r.rank} trial {r.trial}" for r in rows], [r.mean for r in rows],
                             [r.ci95 for r in rows],
                             f"validation {record.objective}: mean over {len(record.seeds)} fresh seeds",
                             zero_line=False, center_name="mean over seeds (95% CI)",
                             extra=[r.original for r in rows])
    epochs = (f"{record.budget_epochs} epochs per run (--budget-epochs)" if record.budget_epochs
              else "each trial's own epochs per run")
    data.blocks.append(Text(f"winner: trial {record.winner}" + (
        f" (the single-run best was trial {record.single_run_best})" if record.changed else "")
        + f"; {len(record.seeds)} fresh seeds, {epochs}"))
    if records.confirmed_winner(s.study) is None:
        data.title = f"{title} (STALE: a later trial beats every confirmed one)"
        data.blocks.append(Text(f"STALE: a trial finished after this confirmation beats every confirmed candidate; "
                                f"run strategy-search confirm {s.study.study_name} again.", note=False))
    if record.advice is not None:
        data.blocks.append(Text(f"warning: {record.advice.message}", note=False))
    return data


def caveat(s: StudyView, sid: str, title: str) -> SectionData:
    test = records.metrics(s.best, "test") if s.best is not None else None
    text = ("Objective values are measured on the validation split, which was used to select the best "
            "trial, so they are optimistic. ")
    if test:
        text += (f"The best trial's test accuracy ({test['accuracy']:.4f} on n={test['n']} images) was never used "
                 "for selection, but it holds for that test set only: ")
    else:
        text += "Test metrics, where recorded, were never used for selection, but they hold for that test set only: "
    text += "other data (other cameras, lighting, class balance, time) can score differently."
    return SectionData(sid, title, [Text(text, note=False)])


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
