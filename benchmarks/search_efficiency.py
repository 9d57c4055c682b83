"""Search efficiency: TPE + Hyperband pruning vs. random sampling without pruning, same space.

For each dataset (digits, and the generated shapes) and each of 5 seeds, both arms run the same
number of trials through the library's worker loop (``create_study`` + ``run_trials``, in-memory
storage). Compute is counted in epochs actually trained (pruned trials count the epochs they
ran), so the figures do not depend on how busy the machine was.

* target: 99% of the best validation objective found by any run of either arm on that dataset;
* compute to target: epochs trained until a run's best *finished* trial reaches the target;
* best at equal compute: each arm's best finished trial within the compute the TPE + Hyperband
  runs used in total (their median).

Goal: random search needs >= 2x the compute of TPE + Hyperband to reach the same objective.

    python -m benchmarks.search_efficiency [--jobs 2]
    python -m benchmarks.search_efficiency --tiny
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, median, parser, setup_threads, table, write_result

ARMS: dict[str, dict[str, Any]] = {
    "tpe+hyperband": {"sampler": {"name": "tpe", "n_startup_trials": 8},
                      "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3}},
    "random": {"sampler": "random", "pruner": "none"},
    # Hyperband whose brackets prune apart but whose TPE learns from every trial.
    "tpe+hyperband-shared": {"sampler": {"name": "tpe", "n_startup_trials": 8},
                             "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3,
                                        "sampler_per_bracket": 0}},
    # The same as tpe+hyperband, with the doctor's baseline config enqueued as trial 0 (what
    # `doctor -o space.yaml` writes); its epochs count like any trial's.
    "tpe+hyperband+doctor": {"sampler": {"name": "tpe", "n_startup_trials": 8},
                             "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3}},
}
DOCTOR_ARM = "tpe+hyperband+doctor"
TARGET_FRACTION = 0.99
FRACTIONS = (0.95, 0.97, 0.99)
GOAL = 2.0

_COMMON_PARAMS: dict[str, Any] = {
    "lr": {"float": [0.0001, 0.3], "log": True},
    "optimizer": {"choices": ["sgd", "adamw"]},
    "batch_size": {"choices": [32, 64, 128]},
    "weight_decay": {"float": [0.000001, 0.01], "log": True},
    "dropout": {"float": [0.0, 0.5]},
    "schedule": {"choices": ["constant", "cosine"]},
    "width": {"choices": [4, 8, 16]},
    "depth": 2,
}


def datasets(tiny: bool) -> dict[str, dict[str, Any]]:
    """Per dataset: the dataset entry, budget and params of the space both arms share."""
    if tiny:
        return {"digits": {"dataset": {"name": "digits", "limit": 300},
                           "budget": {"n_trials": 4, "max_epochs": 3},
                           "params": {"lr": {"float": [0.001, 0.05], "log": True}, "width": 4, "depth": 2}}}
    return {
        "digits": {"dataset": {"name": "digits"}, "budget": {"n_trials": 30, "max_epochs": 9},
                   "params": {**_COMMON_PARAMS, "augment": {"choices": ["none", "flip"]}}},
        # Shapes needs a third stage to see whole shapes (depth 2 stays near 50% in 9 epochs, depth 3
        # reaches ~95%) and all 1,800 images, so that 99% of the best is more than one validation image.
        "shapes": {"dataset": {"name": "shapes"}, "budget": {"n_trials": 30, "max_epochs": 9},
                   "params": {**_COMMON_PARAMS, "depth": {"choices": [2, 3]},
                              "color": {"choices": ["rgb", "gray", "hsv"]}, "augment": {"choices": ["none", "flip"]}}},
    }


def space_doc(name: str, ds: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    doc = {"study": f"{name}-{arm}-{seed}", "objective": "accuracy", "seed": seed, **ds, **ARMS[arm]}
    if arm == DOCTOR_ARM:
        doc["enqueue"] = [doctor_baseline(doc)]
    return doc


def doctor_baseline(doc: dict[str, Any]) -> dict[str, Any]:
    """The doctor's baseline config (default CNN, AdamW 0.001, no remedies), as far as it fits the space."""
    from search.data.datasets import load_dataset
    from search.tools.doctor import baseline_config, baseline_entry
    from search.space.parse import parse_space

    space = parse_space(doc, source="benchmark")
    config = baseline_config(load_dataset(space.dataset), space.budget.max_epochs).to_dict()
    return baseline_entry(space, config)


def run_one(task: tuple[str, dict[str, Any], str, int, int]) -> dict[str, Any]:
    """One search (one dataset, arm and seed) in this process; per-trial epochs and values."""
    name, ds, arm, seed, threads = task
    setup_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    import optuna
    from optuna.trial import TrialState

    from search.space.parse import parse_space
    from search.study.runner import run_trials
    from search.study.create import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(space_doc(name, ds, arm, seed), source=f"benchmark {name}/{arm}")
    study = create_study(space, optuna.storages.InMemoryStorage())
    start = time.perf_counter()
    run_trials(study, space, device="cpu", worker_seed=seed)
    seconds = time.perf_counter() - start
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        trials.append({
            "number": t.number, "state": t.state.name,
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "epochs": len(t.user_attrs.get("history", [])),
            "params": t.params,
        })
    return {"dataset": name, "arm": arm, "seed": seed, "seconds": seconds, "trials": trials}


def curve(run: dict[str, Any]) -> list[tuple[int, float]]:
    """(cumulative epochs, best finished value so far) after each trial, in trial order."""
    out, total, best = [], 0, -math.inf
    for t in run["trials"]:
        total += t["epochs"]
        if t["value"] is not None:
            best = max(best, t["value"])
        out.append((total, best))
    return out


def compute_to(run: dict[str, Any], target: float) -> float:
    return next((float(c) for c, b in curve(run) if b >= target), math.inf)


def best_within(run: dict[str, Any], compute: float) -> float:
    vals = [b for c, b in curve(run) if c <= compute]
    return vals[-1] if vals and vals[-1] > -math.inf else float("nan")


def analyze(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted({r["dataset"] for r in runs}):
        mine = [r for r in runs if r["dataset"] == name]
        best = max(b for r in mine for _, b in curve(r))
        target = TARGET_FRACTION * best
        by_arm = {arm: [r for r in mine if r["arm"] == arm] for arm in ARMS if any(r["arm"] == arm for r in mine)}
        equal = median(curve(r)[-1][0] for r in by_arm["tpe+hyperband"])
        summary: dict[str, Any] = {"dataset": name, "best": best, "target": target, "equal_compute": equal,
                                   "arms": {}}
        for arm, rs in by_arm.items():
            to_target = [compute_to(r, target) for r in rs]
            summary["arms"][arm] = {
                "seeds": [r["seed"] for r in rs],
                "compute_to_target": to_target,
                "median_compute_to_target": _median_inf(to_target),
                "reached": sum(1 for c in to_target if c < math.inf),
                "total_compute": [curve(r)[-1][0] for r in rs],
                "median_total_compute": median(curve(r)[-1][0] for r in rs),
                "final_best": [curve(r)[-1][1] for r in rs],
                "median_final_best": median(curve(r)[-1][1] for r in rs),
                "best_at_equal_compute": [best_within(r, equal) for r in rs],
                "median_best_at_equal_compute": median(best_within(r, equal) for r in rs),
                "pruned": sum(1 for r in rs for t in r["trials"] if t["state"] == "PRUNED"),
                "trials": sum(len(r["trials"]) for r in rs),
                "median_seconds": median(r["seconds"] for r in rs),
            }
        summary.update(_ratio(by_arm, target))
        summary["meets_goal"] = summary["compute_ratio"] >= GOAL
        # The same comparison at looser targets shows how robust the answer is when the best run
        # is an outlier that most runs of either arm never reach.
        summary["by_fraction"] = {f: {**_ratio(by_arm, f * best), "target": f * best,
                                      "reached": {arm: sum(1 for r in rs if compute_to(r, f * best) < math.inf)
                                                  for arm, rs in by_arm.items()}}
                                  for f in FRACTIONS}
        if DOCTOR_ARM in by_arm:
            summary["doctor_by_fraction"] = {f: _ratio(by_arm, f * best, DOCTOR_ARM) for f in FRACTIONS}
        rows.append(summary)
    return rows


def _ratio(by_arm: dict[str, list[dict[str, Any]]], target: float, arm: str = "tpe+hyperband") -> dict[str, Any]:
    """Median epochs to ``target`` per arm and random / ``arm`` (a lower bound when random mostly never got there)."""
    tpe = _median_inf([compute_to(r, target) for r in by_arm[arm]])
    rnd = _median_inf([compute_to(r, target) for r in by_arm["random"]])
    ratio = rnd / tpe if 0 < tpe < math.inf and rnd < math.inf else float("nan")
    lower = math.isinf(rnd) and math.isfinite(tpe)
    if lower:  # random needs more than all it trained: ratio > (random's total) / (TPE+HB's to target)
        ratio = median(curve(r)[-1][0] for r in by_arm["random"]) / tpe
    return {"tpe_compute": tpe, "random_compute": rnd, "compute_ratio": ratio, "ratio_is_lower_bound": lower}


def _median_inf(values: list[float]) -> float:
    """Median where 'never reached' (inf) sorts above everything."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 5, tiny 1)")
    p.add_argument("--jobs", type=int, default=1, help="searches run in parallel processes (results are in epochs,"
                                                       " so this changes only the wall time)")
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--trials", type=int, default=None, help="trials per run (default: each dataset's n_trials)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms (default: {','.join(ARMS)})")
    p.add_argument("--merge", type=Path, default=None, metavar="JSON",
                   help="add the runs of other arms from a saved result (same spaces and seeds) before analyzing")
    p.add_argument("--analyze", type=Path, default=None, metavar="JSON",
                   help="recompute the summary of a saved result (its runs) and rewrite it; no training")
    args = p.parse_args(argv)
    if args.analyze is not None:
        saved = json.loads(args.analyze.read_text())
        saved["summary"] = analyze(saved["runs"])
        saved.update({"target_fraction": TARGET_FRACTION, "fractions": FRACTIONS, "goal": GOAL})
        args.analyze.write_text(json.dumps(saved, indent=2, default=str) + "\n")
        report(saved["summary"], saved["seeds"])
        print(f"\nrewrote {args.analyze}")
        return 0
    setup_threads(args.threads)
    seeds = args.seeds or (1 if args.tiny else 5)
    info = machine()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    merged = json.loads(args.merge.read_text())["runs"] if args.merge else []
    have = set(arms) | {r["arm"] for r in merged}
    if unknown or "random" not in have or "tpe+hyperband" not in have:
        p.error(f"--arms (with --merge): random and tpe+hyperband are needed; known arms: {', '.join(ARMS)}")
    spaces = datasets(args.tiny)
    if args.trials is not None:
        spaces = {n: {**ds, "budget": {**ds["budget"], "n_trials": args.trials}} for n, ds in spaces.items()}
    tasks = [(name, ds, arm, seed, args.threads)
             for name, ds in spaces.items() if args.dataset in (None, name)
             for seed in range(seeds) for arm in (arms if seed % 2 == 0 else arms[::-1])]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.imap_unordered(run_one, tasks):
                runs.append(r)
                _progress(r, len(runs), len(tasks))
    else:
        for task in tasks:
            runs.append(run_one(task))
            _progress(runs[-1], len(runs), len(tasks))
    wall = time.perf_counter() - start
    runs += [r for r in merged if r["arm"] not in arms and r["seed"] < seeds
             and (args.dataset is None or r["dataset"] == args.dataset)]
    rows = analyze(runs)
    report(rows, seeds)
    path = write_result(args.out, "search_efficiency", info,
                        {"arms": {a: ARMS[a] for a in arms}, "target_fraction": TARGET_FRACTION,
                         "fractions": FRACTIONS, "goal": GOAL, "seeds": seeds, "spaces": spaces, "wall_seconds": wall, "summary": rows,
                         "runs": runs}, args.tiny)
    print(f"\nwrote {path}")
    return 0


def report(rows: list[dict[str, Any]], seeds: int) -> None:
    print(f"\nSearch efficiency ({seeds} seeds per arm; compute = epochs trained; target = "
          f"{TARGET_FRACTION:.0%} of the best value any run found)")
    print(table(
        ["dataset", "arm", "trials/run", "pruned", "median epochs to target", "reached", "median total epochs",
         "median final best", "best at TPE+HB compute", "median s/run"],
        [(r["dataset"], arm, a["trials"] // max(1, len(a["seeds"])), a["pruned"],
          _epochs(a["median_compute_to_target"]), f"{a['reached']}/{len(a['seeds'])}", a["median_total_compute"], a["median_final_best"],
          a["median_best_at_equal_compute"], a["median_seconds"])
         for r in rows for arm, a in r["arms"].items()],
    ))
    print(table(["dataset", "best found", "target", "compute ratio random / TPE+HB", f"goal >= {GOAL}x"],
                [(r["dataset"], r["best"], r["target"], _fmt_ratio(r), "met" if r["meets_goal"] else "MISSED")
                 for r in rows]))
    print("\nThe same at looser targets (fraction of the best value found; runs that reached it, of "
          f"{seeds} per arm)")
    print(table(["dataset", "target", "TPE+HB median epochs", "reached", "random median epochs", "reached",
                 "ratio random / TPE+HB"],
                [(r["dataset"], f"{f:.0%} = {b['target']:.3f}", _epochs(b["tpe_compute"]),
                  b["reached"]["tpe+hyperband"], _epochs(b["random_compute"]), b["reached"]["random"], _fmt_ratio(b))
                 for r in rows for f, b in r["by_fraction"].items()]))
    doctor = [r for r in rows if "doctor_by_fraction" in r]
    if doctor:
        print(f"\n{DOCTOR_ARM} (the doctor's baseline enqueued as trial 0) vs random")
        print(table(["dataset", "target", "TPE+HB+doctor median epochs", "random median epochs",
                     "ratio random / TPE+HB+doctor"],
                    [(r["dataset"], f"{f:.0%}", _epochs(b["tpe_compute"]), _epochs(b["random_compute"]), _fmt_ratio(b))
                     for r in doctor for f, b in r["doctor_by_fraction"].items()]))


def _epochs(value: float) -> str:
    return str(int(value)) if math.isfinite(value) else "not reached"


def _fmt_ratio(r: dict[str, Any]) -> str:
    if r["compute_ratio"] != r["compute_ratio"]:
        return "n/a: most runs of both arms never reached it"
    return (">= " if r["ratio_is_lower_bound"] else "") + f"{r['compute_ratio']:.2f}"


def _progress(r: dict[str, Any], done: int, total: int) -> None:
    epochs = sum(t["epochs"] for t in r["trials"])
    best = max((t["value"] for t in r["trials"] if t["value"] is not None), default=float("nan"))
    print(f"[{done}/{total}] {r['dataset']} {r['arm']} seed {r['seed']}: {epochs} epochs, best {best:.4f}, "
          f"{r['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
