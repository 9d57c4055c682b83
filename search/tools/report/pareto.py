"""The Pareto section and the per-objective learning curves, computed once from the study's records.

Studies with several objectives record each trial's values per objective and epoch
(``records.INTERMEDIATE``), pruned trials included, so both sections can show where a pruned trial
stood when it was stopped. The same :class:`~search.tools.report.data.ObjectiveCurves` data is drawn
on the report page, in its PNG and on the dashboard (``search.tools.dashboard``).
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search import records
from search.core.spec import MINIMIZED_METRICS
from search.space.constraints import is_feasible
from search.tools.report.data import (ObjectiveCurves, Pareto, ParetoPoint, SectionData, StudyView, Table, Text,
                                      TrialCurve)

MAX_CURVES = 60  # trials drawn on the per-objective curves (the Pareto front first)
MAX_PRUNED_ROWS = 50
KIND_NAMES = {"front": "Pareto front", "complete": "completed", "infeasible": "infeasible", "pruned": "pruned",
              "running": "running"}


def _kind(t: FrozenTrial, front: set[int]) -> str | None:
    if t.state == TrialState.COMPLETE and t.values:
        return "front" if t.number in front else ("complete" if is_feasible(t) else "infeasible")
    if t.state == TrialState.PRUNED:
        return "pruned"
    if t.state == TrialState.RUNNING:
        return "running"
    return None


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"


def _why_pruned(t: FrozenTrial) -> str:
    """How a pruned trial was stopped, in a few words."""
    epoch = records.pruned_at_epoch(t)
    reason = records.fail_reason(t)
    if epoch is None:
        return reason or "before training"
    return f"at epoch {epoch}" + (f": {reason}" if reason else " by the pruner")


def pareto(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    objectives = s.space.objectives
    if len(objectives) < 2:
        data.blocks.append(Text("one objective: no Pareto front (the best trial is in the summary)."))
        return data
    names = [o.name for o in objectives]
    front = {t.number for t in records.best_trials(s.study)}
    points: list[ParetoPoint] = []
    pruned_rows: list[tuple[Any, ...]] = []
    untrained = 0
    for t in sorted(s.trials, key=lambda t: t.number):
        kind = _kind(t, front)
        if kind in ("front", "complete", "infeasible"):
            points.append(ParetoPoint(t.number, list(t.values), kind, f"trial {t.number} ({KIND_NAMES[kind]})"))
        elif kind == "pruned":
            last = records.last_intermediate(records.intermediate(t), names)
            if last is None:
                untrained += 1
                continue
            step, values = last
            points.append(ParetoPoint(t.number, values, kind, f"trial {t.number}, pruned at epoch {step}"))
            pruned_rows.append((t.number, _why_pruned(t), *(_fmt(v) for v in values)))
    if not points:
        data.blocks.append(Text("no completed or pruned trial with values yet"))
        return data
    axes = [f"{o.name} ({'lower' if o.direction == 'minimize' else 'higher'} is better)" for o in objectives[:2]]
    data.figure = Pareto(axes, points, objectives[0].direction == "maximize")
    on_front = sorted((p for p in points if p.kind == "front"), key=lambda p: p.values[0])
    text = (f"{len(on_front)} trials on the Pareto front (completed, feasible, no other such trial at least as "
            f"good in every objective: what `best` lists). Pruned trials (x) are drawn at their values at the epoch "
            f"they were stopped: a pruned trial's final values are unknown, so it is never on the front.")
    if len(objectives) > 2:
        text += f" The plot shows the first two objectives; the table has all {len(objectives)}."
    if untrained:
        text += f" {untrained} pruned trials stopped before their first epoch are not drawn."
    data.blocks.append(Text(text))
    data.blocks.append(Table(["trial", *names, "params"],
                             [(p.trial, *(_fmt(v) for v in p.values), _params(s, p.trial)) for p in on_front],
                             table_id="pareto-table"))
    if pruned_rows:
        shown = pruned_rows[:MAX_PRUNED_ROWS]
        note = "" if len(shown) == len(pruned_rows) else f" (the first {len(shown)} of {len(pruned_rows)})"
        data.blocks.append(Text(f"pruned trials{note}, with their values at the epoch they were stopped:"))
        data.blocks.append(Table(["trial", "pruned", *(f"{n} then" for n in names)], shown, table_id="pruned-table"))
    return data


def _params(s: StudyView, number: int) -> str:
    t = next(t for t in s.trials if t.number == number)
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())


def curve_data(s: StudyView) -> ObjectiveCurves | None:
    """Per-epoch values of each recorded objective and constrained metric (not the costs, which are
    fixed once the model is built), for the Pareto front first, then the other trials by number."""
    traced = [t for t in s.trials if records.intermediate(t)]
    if not traced:
        return None
    costs = {o.name for o in s.space.objectives if o.metric in MINIMIZED_METRICS}
    metrics: list[str] = []
    for t in traced:
        for name in records.intermediate(t):
            if name != "step" and name not in costs and name not in metrics:
                metrics.append(name)
    front = {t.number for t in records.best_trials(s.study)} if s.space.multi_objective else \
        ({s.best.number} if s.best is not None else set())
    ordered = sorted(traced, key=lambda t: (t.number not in front, t.number))[:MAX_CURVES]
    curves = []
    for t in ordered:
        kind = _kind(t, front) or t.state.name.lower()
        columns = records.intermediate(t)
        steps = list(columns.get("step") or [])
        keep = [i for i, step in enumerate(steps) if step > 0]  # step 0: costs only
        label = KIND_NAMES.get(kind, kind)
        if kind == "pruned":
            epoch = records.pruned_at_epoch(t)
            label = "pruned" + (f" at epoch {epoch}" if epoch is not None else "")
        curves.append(TrialCurve(t.number, f"trial {t.number} ({label})", kind, [steps[i] for i in keep],
                                 {m: [(columns.get(m) or [None] * len(steps))[i] for i in keep] for m in metrics}))
    return ObjectiveCurves(metrics, curves)


def objective_curves(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    curves = curve_data(s)
    if curves is None or not curves.metrics:
        data.blocks.append(Text("no trial recorded its values per objective (studies with several objectives or "
                                "with bounds on a quality metric do)"))
        return data
    total = sum(1 for t in s.trials if records.intermediate(t))
    shown = "" if len(curves.curves) == total else f" (the first {len(curves.curves)} of {total}, the front first)"
    pruned = sum(1 for c in curves.curves if c.kind == "pruned")
    data.blocks.append(Text(f"validation values per epoch of each trial{shown}, as recorded while it trained; "
                            f"{pruned} pruned trials end (dashed, x) at the epoch they were stopped."))
    data.figure = curves
    return data
