"""Accuracy: doctor -> run against plain Optuna, random search and an expert recipe, same CPU budget.

For every task of the suite (benchmarks/tasks) and seed, four arms search with the same compute:

* ``optuna``: TPE + median pruner (Optuna's defaults) over the full catalogue, every registered
  strategy with wide ranges, as a user would write it (``catalogue_space``);
* ``random``: random search over the same space, no pruner;
* ``expert``: one fixed config, the issue's hand-written modern recipe (residual CNN, cosine, label
  smoothing 0.1, weight EMA, flip TTA, crop + flip), sized to these small tasks (width 32, 40 epochs);
* ``doctor``: ``doctor --budget`` -> ``run`` as a user runs it: the diagnosis (baseline, color and
  orientation probes) counts against the budget, the written space runs with what is left.

**The budget is process CPU time** (``time.process_time``: user + system of the one process that
searches, torch on one thread), so other people's load on the machine does not change what an arm
can do. A trial still running when the budget is spent is stopped and does not count. Each arm's
best validation accuracy (and the test accuracy of that trial) is read at 25%, 50% and 100% of the
budget from the trials completed by then.

Resumable: every finished (task, arm, seed) cell is written to the JSON at once; a restart skips
the cells it holds. ``--quick`` runs 2 tasks x 1 seed at 0.35x the budget (~6 CPU-minutes: under 15
minutes of wall time on an idle 2-core machine).

    python -m benchmarks.accuracy [--jobs 2] [--seeds 3] [--tasks digits,patches-d4] [--arms doctor,optuna]
    python -m benchmarks.accuracy --quick
    python -m benchmarks.accuracy --analyze results/accuracy.json
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, median, parser, setup_threads, table, write_result
from benchmarks.tasks import TASKS, build

ARMS = ("doctor", "expert", "optuna", "random")
FRACTIONS = (0.25, 0.5, 1.0)
QUICK_TASKS = ("digits", "cells-imbalanced")
QUICK_SCALE = 0.35  # the expert recipe (40 epochs) still fits in every quick budget
TINY_TASK = "cells-imbalanced"
DEFAULT_ROOT = Path(os.environ.get("TMPDIR", "/tmp")) / "strategy-search-accuracy"

EXPERT: dict[str, Any] = {  # the issue's hand-written trial, scaled from width 64 / 60 epochs to these tasks
    "backbone": "none", "residual": True, "depth": 3, "width": 32, "norm": "batchnorm", "optimizer": "adamw",
    "lr": 0.001, "weight_decay": 0.0005, "schedule": "cosine", "warmup_epochs": 0, "batch_size": 64, "epochs": 40,
    "label_smoothing": 0.1, "ema_decay": 0.99, "tta": "flip", "augment": "light", "input_size": 16,
}


def catalogue_space() -> dict[str, Any]:
    """Every registered strategy with wide ranges: what "search everything" looks like in a space file."""
    from search.data.transforms import AUGMENT_SETS

    return {
        "input_size": {"choices": [16, 24, 32]}, "aspect": {"choices": ["stretch", "pad"]},
        "color": {"choices": ["rgb", "gray", "hsv", "lab"]}, "normalize": {"choices": ["dataset", "imagenet", "none"]},
        "augment": {"choices": list(AUGMENT_SETS)},
        "mix": {"choices": ["none", "mixup", "cutmix", "mixup_cutmix"]},
        "mix_alpha": {"float": [0.1, 1.0], "when": {"mix": {"not": "none"}}},
        "policy": {"choices": ["none", "trivialaugment", "randaugment", "autoaugment", "augmix"]},
        "policy_ops": {"int": [1, 3], "when": {"policy": "randaugment"}},
        "policy_magnitude": {"int": [3, 15], "when": {"policy": "randaugment"}},
        "autoaugment_policy": {"choices": ["imagenet", "cifar10", "svhn"], "when": {"policy": "autoaugment"}},
        "imbalance": {"choices": ["none", "weighted_loss", "balanced_sampler"]},
        "backbone": {"choices": ["none", "resnet18"]}, "pretrained": False,  # no weights offline
        "depth": {"int": [1, 5], "when": {"backbone": "none"}},
        "width": {"choices": [8, 16, 32, 64], "when": {"backbone": "none"}},
        "residual": {"choices": [False, True], "when": {"backbone": "none"}},
        "norm": {"choices": ["batchnorm", "lrn", "none"], "when": {"backbone": "none"}},
        "lrn_size": {"int": [3, 7], "step": 2, "when": {"norm": "lrn"}},
        "dropout": {"float": [0.0, 0.6]}, "drop_path": {"float": [0.0, 0.3]},
        "optimizer": {"choices": ["sgd", "adamw", "adam"]}, "lr": {"float": [1e-5, 0.5], "log": True},
        "momentum": {"float": [0.5, 0.99], "when": {"optimizer": "sgd"}},
        "weight_decay": {"float": [1e-6, 0.3], "log": True},
        "schedule": {"choices": ["constant", "cosine", "step", "onecycle"]}, "warmup_epochs": {"int": [0, 5]},
        "batch_size": {"choices": [16, 32, 64, 128]}, "epochs": {"int": [5, 60]},
        "label_smoothing": {"float": [0.0, 0.3]}, "grad_clip": {"choices": [0.0, 1.0, 5.0]},
        "ema_decay": {"choices": [0.0, 0.9, 0.99, 0.999]}, "tta": {"choices": ["none", "flip", "dihedral"]},
    }


def space_doc(task: str, path: Path, arm: str, seed: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"study": f"{task}-{arm}-{seed}", "objective": "accuracy", "seed": seed,
                           "dataset": {"path": str(path)}, "keep": "none"}
    if arm == "expert":
        return {**doc, "budget": {"n_trials": 1, "max_epochs": EXPERT["epochs"]}, "sampler": "random",
                "pruner": "none", "params": dict(EXPERT)}
    sampler, pruner = ("tpe", "median") if arm == "optuna" else ("random", "none")
    return {**doc, "budget": {"max_epochs": 60}, "sampler": sampler, "pruner": pruner, "params": catalogue_space()}


class BudgetSpent(Exception):
    """The arm's CPU budget ran out during a trial (the trial does not count)."""


def search(space: Any, budget: float, cpu0: float, one_trial: bool = False) -> list[dict[str, Any]]:
    """Run the space's trials in this process until ``budget`` CPU seconds (since ``cpu0``) are used."""
    import optuna

    from search import records
    from search.algorithms.pruners import create_pruner
    from search.algorithms.samplers import create_sampler
    from search.study import objective as objective_module
    from search.study.create import create_study
    from search.study.objective import Objective

    study = create_study(space, optuna.storages.InMemoryStorage())
    study.sampler, study.pruner = create_sampler(space), create_pruner(space, records.is_enqueued)
    objective = Objective(space, device="cpu")
    original = objective_module.train_space

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        inner = kwargs.get("on_epoch")

        def on_epoch(entry: Any) -> None:
            if time.process_time() - cpu0 > budget:
                raise BudgetSpent()
            if inner is not None:
                inner(entry)

        kwargs["on_epoch"] = on_epoch
        return original(*args, **kwargs)

    objective_module.train_space = budgeted
    out = []
    try:
        while time.process_time() - cpu0 < budget:
            trial = study.ask()
            try:
                value = objective(trial)
                study.tell(trial, value)
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except BudgetSpent:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            except Exception as exc:  # noqa: BLE001 - a failing trial (e.g. a config that cannot train) counts
                logging.warning("trial %d failed: %s", trial.number, exc)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            frozen = study.trials[trial.number]
            test = records.metrics(frozen, "test") or {}
            out.append({"number": frozen.number, "state": frozen.state.name,
                        "value": frozen.value if frozen.state.name == "COMPLETE" else None,
                        "test": test.get("accuracy"), "cpu": round(time.process_time() - cpu0, 2),
                        "epochs": len(records.history(frozen)), "enqueued": records.ENQUEUED in frozen.user_attrs,
                        "curve": [round(h["value"], 4) for h in records.history(frozen)],
                        "planned_epochs": (records.config_dict(frozen) or {}).get("epochs"),
                        "params": frozen.params})
            if one_trial:
                break
    finally:
        objective_module.train_space = original
    return out


def run_cell(job: tuple[str, str, int, float, str, bool]) -> dict[str, Any]:
    """One (task, arm, seed) search in this process, on one thread, within ``budget`` CPU seconds
    (``tiny``: the doctor's baseline trains 8 epochs and skips the gray probe)."""
    task, arm, seed, budget, root, tiny = job
    setup_threads(1)
    os.environ["STRATEGY_SEARCH_CACHE"] = str(Path(root) / "cache")
    logging.basicConfig(level=logging.WARNING)
    import optuna
    import yaml

    from search.space.parse import parse_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = build(task, Path(root))
    # The dataset cache at every size is built before the clock starts (the same for every arm).
    from search.data.datasets import load_dataset

    for size in (16, 24, 32):
        load_dataset(parse_space(space_doc(task, path, "random", seed)).dataset, size)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        if arm == "doctor":
            from search.tools.doctor import diagnose, recommend_space

            spec = parse_space({"study": "d", "dataset": {"path": str(path)}, "objective": "accuracy"})
            d = diagnose(spec.dataset, spec.objectives[0], device="cpu", epochs=8 if tiny else None,
                         probe_color=not tiny)
            spent = time.process_time() - cpu0
            text = recommend_space(d, f"{task}-doctor-{seed}", budget=budget, spent=spent, cpu_clock=True)
            doc = yaml.safe_load(text)
            doc.update(seed=seed, keep="none", objective="accuracy")  # accuracy for every arm (imbalanced tasks too)
            extra = {"findings": [f.kind for f in d.findings], "doctor_cpu": round(spent, 2),
                     "baseline_val": d.baseline.get("val_value"), "space": doc}
            space = parse_space(doc, source="doctor space")
        else:
            space = parse_space(space_doc(task, path, arm, seed), source=f"benchmark {arm}")
        trials = search(space, budget, cpu0, one_trial=arm == "expert")
    except Exception:  # noqa: BLE001 - recorded, the other cells go on
        return {"task": task, "arm": arm, "seed": seed, "error": traceback.format_exc()}
    return {"task": task, "arm": arm, "seed": seed, "budget_cpu_s": budget, "trials": trials,
            "cpu_s": round(time.process_time() - cpu0, 2), "wall_s": round(time.perf_counter() - wall0, 2), **extra}


def best_at(cell: dict[str, Any], fraction: float) -> tuple[float | None, float | None]:
    """(best validation accuracy, test accuracy of that trial) among trials completed by ``fraction`` of the budget."""
    done = [t for t in cell.get("trials", []) if t["value"] is not None and t["cpu"] <= fraction * cell["budget_cpu_s"]]
    if not done:
        return None, None
    best = max(done, key=lambda t: (t["value"], -t["cpu"]))
    return best["value"], best["test"]


def first_complete(cell: dict[str, Any]) -> float | None:
    return next((t["value"] for t in cell.get("trials", []) if t["value"] is not None), None)


def analyze(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per task: median over seeds of each arm's best at each fraction; the issue's goals."""
    tasks = sorted({c["task"] for c in cells.values()})
    per_task: dict[str, Any] = {}
    for task in tasks:
        row: dict[str, Any] = {}
        for arm in ARMS:
            mine = [c for c in cells.values() if c["task"] == task and c["arm"] == arm and "trials" in c]
            if not mine:
                continue
            entry: dict[str, Any] = {"seeds": sorted(c["seed"] for c in mine)}
            for f in FRACTIONS:
                vals = [best_at(c, f) for c in mine]
                entry[f"val@{f:g}"] = [v for v, _ in vals]
                entry[f"test@{f:g}"] = [t for _, t in vals]
                entry[f"median_val@{f:g}"] = median(v for v, _ in vals if v is not None)
                entry[f"median_test@{f:g}"] = median(t for _, t in vals if t is not None)
            entry["first_complete"] = [first_complete(c) for c in mine]
            entry["trials"] = [len(c["trials"]) for c in mine]
            row[arm] = entry
        per_task[task] = row
    goals: dict[str, Any] = {}
    both = [t for t, r in per_task.items() if "doctor" in r and "optuna" in r]
    if both:
        beats_half = [t for t in both if _gt(per_task[t]["doctor"]["median_val@0.5"], per_task[t]["optuna"]["median_val@0.5"])]
        diffs = [per_task[t]["doctor"]["median_val@1"] - per_task[t]["optuna"]["median_val@1"] for t in both
                 if _num(per_task[t]["doctor"]["median_val@1"]) and _num(per_task[t]["optuna"]["median_val@1"])]
        goals["beats_optuna_at_half"] = {"tasks": beats_half, "count": len(beats_half), "of": len(both)}
        goals["median_gain_over_optuna_at_full"] = median(diffs) if diffs else None
    with_expert = [t for t, r in per_task.items() if "doctor" in r and "expert" in r]
    if with_expert:
        goals["doctor_reaches_expert"] = {t: _ge(per_task[t]["doctor"]["median_val@1"],
                                                 per_task[t]["expert"]["median_val@1"]) for t in with_expert}
        goals["first_trial_within_3_points"] = {
            t: _within(median(v for v in per_task[t]["doctor"]["first_complete"] if v is not None),
                       per_task[t]["expert"]["median_val@1"]) for t in with_expert}
    return {"per_task": per_task, "goals": goals}


def _num(x: Any) -> bool:
    return isinstance(x, float) and x == x


def _gt(a: Any, b: Any) -> bool:
    return _num(a) and (not _num(b) or a > b)


def _ge(a: Any, b: Any) -> bool:
    return _num(a) and (not _num(b) or a >= b)


def _within(a: Any, b: Any, points: float = 0.03) -> bool:
    return _num(a) and (not _num(b) or a >= b - points)


def report(summary: dict[str, Any]) -> str:
    rows = []
    for task, r in summary["per_task"].items():
        for arm, e in r.items():
            rows.append([task, arm, len(e["seeds"]), *(e[f"median_val@{f:g}"] for f in FRACTIONS),
                         e["median_test@1"], median(v for v in e["first_complete"] if v is not None)])
    return table(["task", "arm", "seeds", "val@25%", "val@50%", "val@100%", "test@100%", "first trial"], rows)


def _save(path: Path, info: dict[str, Any], cells: dict[str, Any], args: Any) -> None:
    payload = {"benchmark": "accuracy", "quick": args.quick, "machine": info, "fractions": FRACTIONS,
               "budget": "process CPU seconds per (task, arm, seed), torch on 1 thread",
               "budgets_cpu_s": {t: TASKS[t].budget_cpu_s * (QUICK_SCALE if args.quick else 1) for t in TASKS},
               "expert": EXPERT, "catalogue_space": catalogue_space(), "cells": cells, "summary": analyze(cells)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK_TASKS)} tasks, 1 seed, {QUICK_SCALE:g}x budget")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes (budgets are CPU time)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the tasks and their cache are written")
    p.add_argument("--analyze", type=Path, default=None, metavar="JSON", help="re-analyze a saved result")
    args = p.parse_args(argv)
    if args.analyze:
        saved = json.loads(args.analyze.read_text())
        saved["summary"] = analyze(saved["cells"])
        args.analyze.write_text(json.dumps(saved, indent=1, default=str) + "\n")
        print(report(saved["summary"]))
        return 0
    setup_threads(1)
    if args.tiny:
        tasks, seeds, scale, arms = [TINY_TASK], 1, 0.25, ["expert", "doctor"]
    elif args.quick:
        tasks, seeds, scale, arms = list(QUICK_TASKS), 1, QUICK_SCALE, args.arms.split(",")
    else:
        tasks, seeds, scale, arms = list(TASKS), args.seeds, 1.0, args.arms.split(",")
    if args.tasks:
        tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS] + [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown tasks/arms {unknown}; tasks: {', '.join(TASKS)}; arms: {', '.join(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "accuracy" + ("-tiny" if args.tiny else "-quick" if args.quick else "")
    path = args.out / f"{name}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    cells: dict[str, Any] = {k: v for k, v in saved.get("cells", {}).items() if "trials" in v}
    info = saved.get("machine") or machine()
    for t in tasks:  # written once, before any worker (no two processes write one task)
        build(t, args.root)
    # Seeds outermost; within a seed every task's doctor, expert and plain-Optuna cells before the random
    # ones: a run stopped early has whole seeds of the arms the goals compare.
    jobs = [(t, a, s, TASKS[t].budget_cpu_s * scale, str(args.root), args.tiny) for s in range(seeds)
            for last in (False, True) for t in tasks for a in arms
            if (a == "random") == last and f"{t}/{a}/{s}" not in cells]
    print(f"{len(jobs)} cell(s) to run ({len(cells)} already in {path})", flush=True)
    # Workers of a ProcessPoolExecutor are not daemons: a cache build inside one may start its own pool.
    pool = ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) if args.jobs > 1 else None
    runner = map if pool is None else (lambda fn, items: (f.result() for f in as_completed(
        [pool.submit(fn, item) for item in items])))
    for cell in runner(run_cell, jobs):
        key = f"{cell['task']}/{cell['arm']}/{cell['seed']}"
        cells[key] = cell
        status = "error" if "error" in cell else (f"best {max([t['value'] for t in cell['trials'] if t['value'] is not None] or [float('nan')]):.3f}"
                                                  f", {len(cell['trials'])} trials, {cell['cpu_s']:.0f} CPU-s / {cell['wall_s']:.0f} s")
        print(f"{key}: {status}", flush=True)
        if "error" in cell:
            print(cell["error"], flush=True)
        _save(path, info, cells, args)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _save(path, info, cells, args)
    print(report(analyze(cells)))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
