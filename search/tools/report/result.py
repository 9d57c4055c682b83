"""The report's first sections, for the person who asks "so what did we get?": the result (best vs the
doctor's baseline with the gain and its interval, the doctor's findings, trials run vs planned and
why it stopped, compute, size and latency, per-class precision/recall, what to do next) and the
leaderboard. Computed once into plain :mod:`search.tools.report.data` blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from search import records
from search.core.numbers import duration, readable
from search.space.provenance import baseline_value, doctor_record
from search.study.stopping import format_stop, stop_reason
from search.tools.report.data import SectionData, Slice, Slices, StudyView, Table, Text

LEADERBOARD = 10  # trials in the report's leaderboard
PEAK_DROP = 0.01  # a best trial whose last epoch is this far below its best epoch "peaked early"
STILL_RISING = 0.02  # ... whose last quarter gained this much was "still improving"
WEAK_CLASS = 0.1  # a class whose recall is this far below the mean recall needs attention
LATE_SHARE = 0.8  # a best found after this share of the trials came "late"


@dataclass
class Baseline:
    """What the search is compared with: the doctor's baseline (or the first enqueued trial)."""

    source: str  # words: "the doctor's baseline (small CNN, 10 epochs, 12 s)"
    value: float
    confusion: list[list[int]] | None = None
    notes: list[str] = field(default_factory=list)


def baseline_of(s: StudyView) -> Baseline | None:
    """The doctor's recorded baseline, re-scored on the study's first objective when its confusion
    matrix is stored; else the trial enqueued from the space's first ``enqueue:`` entry."""
    record = doctor_record(s.space.raw)
    spec = s.space.objectives[0]
    if record is not None:
        b = record.get("baseline") or {}
        value = baseline_value(record)
        confusion = b.get("val_confusion")
        classes = b.get("classes") or []
        what = f"the doctor's baseline (small CNN, {b.get('epochs', '?')} epochs, {b.get('seconds', '?')} s)"
        if confusion and spec.direction == "maximize":
            from search.train.metrics import Metrics, positive_index

            try:
                positive = positive_index(spec, classes)
            except Exception:  # noqa: BLE001 - a class the baseline never saw: keep its own value
                positive = None
            if positive is not None or spec.average != "binary":
                value = Metrics(confusion=confusion, loss=math.nan).score(spec.metric, spec.average, positive)
                return Baseline(what, value, confusion)
        if value is not None and record.get("objective") == spec.name:
            return Baseline(what, value)
        if value is not None:
            return Baseline(what, value, notes=[f"the doctor judged by {record.get('objective')}, the study by "
                                                f"{spec.name}: no gain is computed"])
    enqueued = [t for t in s.complete if t.user_attrs.get(records.ENQUEUED) == 0]
    if enqueued:
        t = enqueued[0]
        confusion = (records.metrics(t, "validation") or {}).get("confusion")
        return Baseline(f"trial {t.number} (the space's first enqueued configuration)", t.values[0], confusion)
    return None


def gain_interval(s: StudyView, base: Baseline) -> tuple[float, float] | None:
    """95% bootstrap interval of best minus baseline on the validation images (None: not computable)."""
    from search.tools.stats import bootstrap_difference
    from search.train.metrics import positive_index

    spec = s.space.objectives[0]
    best = records.metrics(s.best, "validation") if s.best is not None else None
    if base.confusion is None or not best or not best.get("confusion") or spec.direction != "maximize":
        return None
    classes = list(best["per_class"])
    positive = positive_index(spec, classes) if spec.average == "binary" else None
    lo, hi = bootstrap_difference(best["confusion"], base.confusion, spec.metric, spec.average, positive)
    return (lo, hi) if math.isfinite(lo) else None


def run_facts(s: StudyView) -> dict[str, Any]:
    """Trials run vs planned, why the study stopped, and the compute it used."""
    from search.storage.budget import counted_trials
    from search.study.runner import budget_of

    planned = budget_of(s.space, None)
    used = counted_trials(list(s.trials))
    running = sum(t.state == TrialState.RUNNING for t in s.trials)
    stopped = format_stop(stop_reason(s.study))
    if stopped:
        why = stopped
    elif running:
        why = f"still running ({running} trial(s) running now)"
    elif planned is not None and used >= planned:
        why = f"the trial budget is used up (budget.n_trials {planned})"
    elif planned is None:
        why = f"no trial budget: it ran until its timeout ({s.space.budget.timeout:g} s) or was stopped" \
            if s.space.budget.timeout else "no trial budget"
    else:
        why = (f"stopped before its budget ({used} of {planned}): a timeout, Ctrl-C or the last worker ended; "
               "running the space again resumes it")
    finished = [t for t in s.trials if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
    wall = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds() \
        if finished else 0.0
    reruns = sum(float(e.seconds or 0.0) for e in records.reruns(s.study).values())
    devices = sorted({d for d in (t.user_attrs.get(records.DEVICE) for t in finished) if d})
    return {"planned": planned, "used": used, "why": why, "trial_seconds": trial_seconds, "wall_seconds": wall,
            "rerun_seconds": reruns, "devices": devices,
            "epochs": sum(len(records.history(t)) for t in finished)}


def next_steps(s: StudyView, base: Baseline | None, gain: tuple[float, float] | None, facts: dict[str, Any]
               ) -> list[str]:
    """What to do next, each derived from a number above (most useful first)."""
    name = s.study.study_name
    out: list[str] = []
    best = s.best
    if best is None:
        return [f"no completed trial yet: strategy-search run (or worker) {name}"]
    value = best.values[0]
    if base is not None and gain is not None and gain[0] <= 0:
        out.append(f"the gain over the baseline is not clear yet (its 95% interval [{gain[0]:+.3f}, {gain[1]:+.3f}] "
                   "includes 0): run more trials, or a larger validation split, before trusting it")
    ranked = s.ranked()
    val = records.metrics(best, "validation") or {}
    n_val = int(val.get("n") or 0)
    if len(ranked) >= 2 and n_val:
        # Trials within one binomial standard error of the best cannot be told apart on this split.
        # (Agresti-Coull's shrunk proportion: a perfect score on n images is not certain either.)
        p = (value * n_val + 2) / (n_val + 4)
        se = math.sqrt(p * (1 - p) / (n_val + 4)) if 0 <= value <= 1 else 0.0
        close = [t for t in ranked[1:] if abs(t.values[0] - value) <= se]
        confirmed = records.confirmed(s.study)
        if close and (confirmed is None or records.confirmed_winner(s.study) is None):
            top = min(5, 1 + len(close))
            out.append(f"confirm the top {top}: {len(close)} trial(s) score within one standard error "
                       f"({se:.3f} on {n_val} validation images) of the best, so the ranking may be luck: "
                       f"strategy-search confirm {name} --top {top}")
    ablation = records.ablation(s.study)
    if ablation is None or ablation.trial != best.number:
        out.append(f"learn which strategies mattered: strategy-search ablate {name} --seeds 5"
                   + (" (the stored ablation is of another trial)" if ablation else ""))
    elif ablation.advice is not None:
        out.append(f"ablate with {ablation.advice.suggested_seeds} seeds: {ablation.advice.message}")
    per_class = val.get("per_class") or {}
    if per_class:
        recalls = {c: m["recall"] for c, m in per_class.items() if isinstance(m.get("recall"), (int, float))}
        mean = sum(recalls.values()) / max(1, len(recalls))
        support = {c: sum(row) for c, row in zip(per_class, val.get("confusion") or [])}
        weak = sorted((r, c) for c, r in recalls.items() if r < mean - WEAK_CLASS)
        if weak:
            shown = ", ".join(f"{c!r} (recall {r:.2f} on {support.get(c, '?')} validation images)" for r, c in weak[:3])
            out.append(f"more (or cleaner) data for {shown}: the weakest class(es), against a mean recall of {mean:.2f}")
    curve = [h["value"] for h in records.history(best)]
    if curve and records.restored_epoch(best) is None:
        peak = max(curve) if s.maximize else min(curve)
        at = curve.index(peak) + 1
        if abs(peak - curve[-1]) >= PEAK_DROP and at < len(curve):
            out.append(f"keep the best epoch: trial {best.number} peaked at {peak:.3f} at epoch {at} but is scored "
                       f"{curve[-1]:.3f} at epoch {len(curve)}; search restore_best_epoch: {{choices: [false, true]}}")
        k = max(1, len(curve) // 4)
        if len(curve) > k and (curve[-1] - max(curve[:-k])) * (1 if s.maximize else -1) >= STILL_RISING:
            out.append(f"more epochs: trial {best.number} was still improving at its last epoch "
                       f"({max(curve[:-k]):.3f} -> {curve[-1]:.3f} over the last {k})")
    numbers = [t.number for t in sorted(s.complete, key=lambda t: t.number)]
    if facts["planned"] and len(numbers) >= 5 and numbers.index(best.number) >= LATE_SHARE * len(numbers) \
            and "budget is used up" in facts["why"]:
        out.append(f"the best came late (trial {best.number}, the {numbers.index(best.number) + 1}th of "
                   f"{len(numbers)} completed): raise the budget, e.g. strategy-search run SPACE --n-trials "
                   f"{2 * facts['planned']}")
    test = records.metrics(best, "test")
    if test and s.space.objectives[0].metric == "accuracy" and value - test["accuracy"] > 0.05:
        out.append(f"the test accuracy ({test['accuracy']:.3f}) is well below the validation score ({value:.3f}): "
                   "the selection fitted the validation split; check the splits for duplicates or drift")
    out.append(f"ship it: strategy-search export {name} -o best/ (weights, TorchScript, torch.export, ONNX)")
    return out


def result(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    best = s.best
    facts = run_facts(s)
    spec = s.space.objectives[0]
    if best is None:
        data.blocks.append(Text("no completed trial yet" + (" that meets the constraints" if s.space.constraints
                                                            else "") + f"; {facts['why']}", note=False))
        return data
    val = records.metrics(best, "validation") or {}
    rows: list[tuple[Any, ...]] = [("best", f"trial {best.number}: " + ", ".join(
        f"{o.name} {v:.4f}" for o, v in zip(s.space.objectives, best.values))
        + f" (validation split{', n=' + str(val['n']) if val.get('n') else ''})")]
    base = baseline_of(s)
    gain = gain_interval(s, base) if base is not None else None
    if base is not None:
        rows.append(("baseline", f"{base.source}: {spec.name} {base.value:.4f}"))
        if not base.notes:
            diff = best.values[0] - base.value
            ci = (f", 95% interval [{gain[0]:+.4f}, {gain[1]:+.4f}] (bootstrap over the validation images, each "
                  "model resampled on its own: wider than a paired interval)") if gain else ""
            rows.append(("gain", f"{diff:+.4f} {spec.name}{ci}"))
        rows += [("note", n) for n in base.notes]
    else:
        rows.append(("baseline", "none recorded: the space was not written by strategy-search doctor (its baseline "
                                 "and findings come with a space from strategy-search doctor DATA -o space.yaml)"))
    test = records.metrics(best, "test")
    if test:
        rows.append(("test split", f"accuracy {test['accuracy']:.4f}, f1 (macro) {test['f1_macro']:.4f} "
                                   f"(n={test['n']}; never used to select; holds for this test set only)"))
    restored = records.restored_epoch(best)
    if restored is not None:
        rows.append(("epoch kept", f"epoch {restored} of {len(records.history(best))} (restore_best_epoch)"))
    planned = "no budget" if facts["planned"] is None else f"{facts['planned']} planned"
    rows.append(("trials", f"{facts['used']} run ({planned}): "
                           f"{records.format_counts(sorted(records.state_counts(s.trials).items()))}"))
    rows.append(("stopped", facts["why"]))
    compute = (f"{duration(facts['trial_seconds'])} of training in trials ({facts['epochs']} epochs), "
               f"{duration(facts['wall_seconds'])} from the first trial's start to the last one's end")
    if facts["rerun_seconds"]:
        compute += f"; ablate/confirm re-training {duration(facts['rerun_seconds'])}"
    if facts["devices"]:
        compute += f"; on {', '.join(facts['devices'])}"
    rows.append(("compute", compute))
    n_params, latency = best.user_attrs.get(records.N_PARAMS), best.user_attrs.get(records.LATENCY_MS)
    if n_params is not None:
        model = f"{n_params:,} parameters (~{n_params * 4 / 1e6:.2g} MB as float32 weights)"
        if latency is not None:
            model += f", {readable(float(latency))} ms per image"
            device = best.user_attrs.get(records.DEVICE)
            model += f" on {device} (latency on another machine differs)" if device else ""
        rows.append(("model", model))
    data.blocks.append(Table(["", ""], rows, table_id="result-table", show_header=False))
    steps = next_steps(s, base, gain, facts)
    data.blocks.append(Text("Next steps: " + " ".join(f"({i}) {step}." for i, step in enumerate(steps, 1)),
                            note=False))
    record = doctor_record(s.space.raw)
    if record is not None and record.get("findings"):
        data.blocks.append(Table(["the doctor found", "what it saw"],
                                 [(f["kind"], f["summary"]) for f in record["findings"]],
                                 table_id="findings-table", caption="The doctor's findings (on its baseline)"))
    if record is not None and record.get("why"):
        searched = {p.name: _range(p) for p in s.space.params}
        data.blocks.append(Table(["param", "in this space", "why (the doctor's reason)"],
                                 [(name, searched.get(name, "-"), why) for name, why in record["why"].items()],
                                 table_id="space-why-table", caption="Why the space looks as it does"))
    per_class = val.get("per_class") or {}
    if per_class:
        test_pc = (test or {}).get("per_class") or {}
        support = {c: sum(row) for c, row in zip(per_class, val.get("confusion") or [])}
        columns = ["class", "validation precision", "validation recall", "validation f1", "validation images"]
        if test_pc:
            columns += ["test precision", "test recall"]
        table_rows = []
        for c, m in per_class.items():
            row: tuple[Any, ...] = (c, *(f"{m.get(k, math.nan):.3f}" for k in ("precision", "recall", "f1")),
                                    support.get(c, "-"))
            if test_pc:
                t = test_pc.get(c, {})
                row += (f"{t.get('precision', math.nan):.3f}", f"{t.get('recall', math.nan):.3f}")
            table_rows.append(row)
        data.blocks.append(Table(columns, table_rows, table_id="per-class-table",
                                 caption=f"Per class, trial {best.number}"))
    return data


def _range(p: Any) -> str:
    """A param's values in this space, in words: ``0.0001 .. 0.01 (log)``, ``none / flip``, ``64``."""
    if p.kind == "fixed":
        return readable(p.value)
    if p.kind == "choices":
        return " / ".join(readable(c) for c in p.choices)
    return f"{readable(p.low)} .. {readable(p.high)}" + (" (log)" if getattr(p, "log", False) else "")


def leaderboard(s: StudyView, sid: str, title: str) -> SectionData:
    from search.tools.summary import leaderboard as rows_of

    data = SectionData(sid, title)
    rows = rows_of(s.study, s.space, LEADERBOARD)
    if not rows:
        data.blocks.append(Text("no completed trial yet"))
        return data
    names = list(rows[0]["values"])
    data.blocks.append(Text(f"the {len(rows)} best completed trials by validation {s.objective}"
                            + (" (meeting the constraints)" if s.space.constraints else "")
                            + f"; strategy-search best {s.study.study_name} --top N prints the same table."))
    data.blocks.append(Table(
        ["rank", "trial", *names, "test accuracy", "parameters", "ms / image", "epochs", "time", "searched params"],
        [(r["rank"], r["number"], *(f"{r['values'][k]:.4f}" for k in names),
          "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}",
          "-" if r["n_params"] is None else f"{r['n_params']:,}",
          "-" if r["latency_ms"] is None else readable(float(r["latency_ms"])),
          "-" if r["epochs"] is None else str(r["epochs"]) + (f" (kept {r['restored_epoch']})"
                                                             if r["restored_epoch"] else ""),
          "-" if r["duration_s"] is None else duration(r["duration_s"]),
          ", ".join(f"{k}={readable(v)}" for k, v in r["params"].items())) for r in rows],
        table_id="leaderboard-table"))
    return data


SLICE_COLUMNS = 4  # panels per row of the slice plot


def slices(s: StudyView, sid: str, title: str) -> SectionData:
    """One panel per searched param (objective against the param's value), wrapped into rows."""
    data = SectionData(sid, title)
    trials = [t for t in s.complete if t.params]
    names = [p.name for p in s.space.params if p.kind != "fixed" and any(p.name in t.params for t in trials)]
    if not trials or not names:
        data.blocks.append(Text("no completed trial with searched params yet"))
        return data
    panels = []
    for name in names:
        used = [t for t in trials if name in t.params]
        p = s.space.param(name)
        panels.append(Slice(name, [t.params[name] for t in used], [t.values[0] for t in used],
                            [t.number for t in used], categorical=p.kind == "choices",
                            log=bool(getattr(p, "log", False))))
    data.blocks.append(Text(f"validation {s.objective} of each completed trial against each searched param "
                            "(color: trial number, later trials darker); one panel per param, "
                            f"{SLICE_COLUMNS} per row."))
    data.figure = Slices(f"validation {s.objective}", panels, SLICE_COLUMNS)
    return data
