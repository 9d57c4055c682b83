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

Two objectives (``--pareto``, issue 26): accuracy vs. params, TPE + ``mo_asha`` pruning vs. TPE
without pruning vs. random sampling without pruning, same spaces and seeds. Compute is epochs again;
the measure is the hypervolume of the completed trials (see ``benchmarks._pareto``).

* target: 99% of the final hypervolume of the run without pruning with the same seed;
* epochs to target, as a fraction of all the epochs that run without pruning trained;
* front kept: the points of that run's final Pareto front the other run matches or beats;
* replay: mo_asha's decisions on the trials of the run without pruning (same trials, same curves),
  with the arm's options and with each setting of ``PARETO_GRID``;
* oracle: the fewest epochs a rung-based pruner spends on those trials while keeping every one that
  adds hypervolume (what the rung decisions cost is the replay's distance from it); and the same
  oracle deciding at each later epoch, which shows how late a pruner may tell those trials apart
  and still meet the goal.

Goal: 99% of the no-pruning hypervolume with at most half its epochs (median over seeds), losing no
point of its final front (else: how many, by how much).

    python -m benchmarks.search_efficiency [--jobs 2]
    python -m benchmarks.search_efficiency --tiny
    python -m benchmarks.search_efficiency --pareto [--jobs 2] [--resume runs.jsonl] [--epochs 27]
    python -m benchmarks.search_efficiency --analyze results/search_efficiency-pareto-shapes.json
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

from benchmarks import _pareto
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


# Two objectives: the same samplers, with mo_asha (its defaults) or without pruning.
PARETO_OBJECTIVES = ["accuracy", "params"]
PARETO_ARMS: dict[str, dict[str, Any]] = {
    "tpe+mo_asha": {"sampler": {"name": "tpe", "n_startup_trials": 8}, "pruner": "mo_asha"},
    "tpe": {"sampler": {"name": "tpe", "n_startup_trials": 8}, "pruner": "none"},
    "random": {"sampler": "random", "pruner": "none"},
    # The paper's MO-ASHA exactly (random sampling): pruning's effect without the sampler learning from it.
    "random+mo_asha": {"sampler": "random", "pruner": "mo_asha"},
}
PARETO_BASELINE = "tpe"  # "no pruning": the run whose hypervolume and epochs set the bar
PARETO_PRUNED = "tpe+mo_asha"
SAME_SAMPLER = {"tpe+mo_asha": "tpe", "random+mo_asha": "random"}  # each pruned arm without pruning
# Pruned arms run this many times the trials: their first n trials are exactly a run of n (one
# worker, the sampler does not know the budget), and the rest show how far their epochs go.
PARETO_TRIAL_FACTOR = {"tpe+mo_asha": 2, "random+mo_asha": 2}
PARETO_GOAL = 0.5  # at most this fraction of the no-pruning run's epochs
# mo_asha's rung options the replay also tries (the arm's sampler-dependent start-up stays): whether
# another setting would have met the goal on the no-pruning runs' own trials.
PARETO_GRID = [{"min_resource": r, "reduction_factor": f, "keep_front": k}
               for r in (1, 2, 3) for f in (2, 3, 4) for k in (1, 0)]


def pareto_datasets(tiny: bool) -> dict[str, dict[str, Any]]:
    """Per dataset: the two-objective space every arm shares (more architectures, for a front)."""
    if tiny:
        return {"digits": {"dataset": {"name": "digits", "limit": 300}, "budget": {"n_trials": 6, "max_epochs": 3},
                           "params": {"lr": {"float": [0.001, 0.05], "log": True},
                                      "width": {"choices": [4, 8]}, "depth": 2}}}
    arch = {"width": {"choices": [4, 6, 8, 12, 16]}, "depth": {"choices": [1, 2, 3]}}
    return {
        "digits": {"dataset": {"name": "digits"}, "budget": {"n_trials": 40, "max_epochs": 9},
                   "params": {**_COMMON_PARAMS, **arch, "augment": {"choices": ["none", "flip"]}}},
        "shapes": {"dataset": {"name": "shapes"}, "budget": {"n_trials": 40, "max_epochs": 9},
                   "params": {**_COMMON_PARAMS, **arch, "color": {"choices": ["rgb", "gray"]},
                              "augment": {"choices": ["none", "flip"]}}},
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


def space_doc(name: str, ds: dict[str, Any], arm: str, seed: int, pareto: bool = False) -> dict[str, Any]:
    if pareto:
        budget = {**ds["budget"], "n_trials": ds["budget"]["n_trials"] * PARETO_TRIAL_FACTOR.get(arm, 1)}
        return {"study": f"{name}-{arm}-{seed}", "objective": PARETO_OBJECTIVES, "seed": seed,
                **ds, "budget": budget, **PARETO_ARMS[arm]}
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


def run_one(task: tuple[str, dict[str, Any], str, int, int, bool]) -> dict[str, Any]:
    """One search (one dataset, arm and seed) in this process; per-trial epochs and values."""
    name, ds, arm, seed, threads, pareto = task
    setup_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    import optuna
    from optuna.trial import TrialState

    from search import records
    from search.space.parse import parse_space
    from search.study.runner import run_trials
    from search.study.create import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(space_doc(name, ds, arm, seed, pareto), source=f"benchmark {name}/{arm}")
    study = create_study(space, optuna.storages.InMemoryStorage())
    start = time.perf_counter()
    run_trials(study, space, device="cpu", worker_seed=seed)
    seconds = time.perf_counter() - start
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        done = t.state == TrialState.COMPLETE
        entry = {"number": t.number, "state": t.state.name, "epochs": len(records.history(t)), "params": t.params}
        if pareto:
            entry.update({"values": list(t.values) if done else None, "intermediate": records.intermediate(t)})
        else:
            entry["value"] = t.value if done else None
        trials.append(entry)
    return {"dataset": name, "arm": arm, "seed": seed, "seconds": seconds, "trials": trials,
            "objectives": PARETO_OBJECTIVES if pareto else ["accuracy"]}


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
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per trial, max_epochs (default: each dataset's; mo_asha's rungs follow it)")
    p.add_argument("--arms", default=None, help=f"comma-separated arms (default: {','.join(ARMS)}; with --pareto "
                                                f"{','.join(PARETO_ARMS)})")
    p.add_argument("--pareto", action="store_true",
                   help="two objectives (accuracy vs. params): mo_asha vs. no pruning vs. random")
    p.add_argument("--resume", type=Path, default=None, metavar="JSONL",
                   help="append each finished run to this file, and skip the runs already in it (restartable)")
    p.add_argument("--merge", type=Path, default=None, metavar="JSON",
                   help="add the runs of other arms from a saved result (same spaces and seeds) before analyzing")
    p.add_argument("--analyze", type=Path, default=None, metavar="JSON",
                   help="recompute the summary of a saved result (its runs) and rewrite it; no training")
    args = p.parse_args(argv)
    if args.analyze is not None:
        saved = json.loads(args.analyze.read_text())
        if saved.get("pareto"):
            saved["summary"] = analyze_pareto(saved["runs"])
            saved.update({"target_fraction": TARGET_FRACTION, "goal": PARETO_GOAL})
            report_pareto(saved["summary"], saved["seeds"])
        else:
            saved["summary"] = analyze(saved["runs"])
            saved.update({"target_fraction": TARGET_FRACTION, "fractions": FRACTIONS, "goal": GOAL})
            report(saved["summary"], saved["seeds"])
        args.analyze.write_text(json.dumps(saved, indent=2, default=str) + "\n")
        print(f"\nrewrote {args.analyze}")
        return 0
    setup_threads(args.threads)
    seeds = args.seeds or (1 if args.tiny else (3 if args.pareto else 5))
    info = machine()
    known = PARETO_ARMS if args.pareto else ARMS
    arms = [a for a in (args.arms or ",".join(known)).split(",") if a]
    unknown = [a for a in arms if a not in known]
    merged = json.loads(args.merge.read_text())["runs"] if args.merge else []
    have = set(arms) | {r["arm"] for r in merged}
    needed = {PARETO_BASELINE, PARETO_PRUNED} if args.pareto else {"random", "tpe+hyperband"}
    if unknown or not needed <= have:
        p.error(f"--arms (with --merge): {' and '.join(sorted(needed))} are needed; known arms: {', '.join(known)}")
    spaces = pareto_datasets(args.tiny) if args.pareto else datasets(args.tiny)
    for key, given in (("n_trials", args.trials), ("max_epochs", args.epochs)):
        if given is not None:
            spaces = {n: {**ds, "budget": {**ds["budget"], key: given}} for n, ds in spaces.items()}
    tasks = [(name, ds, arm, seed, args.threads, args.pareto)
             for name, ds in spaces.items() if args.dataset in (None, name)
             for seed in range(seeds) for arm in (arms if seed % 2 == 0 else arms[::-1])]
    runs: list[dict[str, Any]] = []
    if args.resume is not None and args.resume.exists():
        runs = [json.loads(line) for line in args.resume.read_text().splitlines() if line.strip()]
        done = {(r["dataset"], r["arm"], r["seed"]) for r in runs}
        tasks = [t for t in tasks if (t[0], t[2], t[3]) not in done]
        print(f"resuming: {len(runs)} run(s) from {args.resume}, {len(tasks)} to go", flush=True)
    start = time.perf_counter()

    def finished(r: dict[str, Any]) -> None:
        runs.append(r)
        if args.resume is not None:
            with args.resume.open("a") as f:
                f.write(json.dumps(r, default=str) + "\n")
        _progress(r, len(runs), len(runs) + len(tasks) - done_here[0] - 1)
        done_here[0] += 1

    done_here = [0]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.imap_unordered(run_one, tasks):
                finished(r)
    else:
        for task in tasks:
            finished(run_one(task))
    wall = time.perf_counter() - start
    runs += [r for r in merged if r["arm"] not in arms and r["seed"] < seeds
             and (args.dataset is None or r["dataset"] == args.dataset)]
    if args.pareto:
        rows = analyze_pareto(runs)
        report_pareto(rows, seeds)
        payload = {"pareto": True, "objectives": PARETO_OBJECTIVES, "arms": {a: PARETO_ARMS[a] for a in arms},
                   "trial_factor": PARETO_TRIAL_FACTOR, "target_fraction": TARGET_FRACTION, "goal": PARETO_GOAL}
        name = "search_efficiency-pareto"
    else:
        rows = analyze(runs)
        report(rows, seeds)
        payload = {"arms": {a: ARMS[a] for a in arms}, "target_fraction": TARGET_FRACTION, "fractions": FRACTIONS,
                   "goal": GOAL}
        name = "search_efficiency"
    path = write_result(args.out, name, info, {**payload, "seeds": seeds, "spaces": spaces, "wall_seconds": wall,
                                               "summary": rows, "runs": runs}, args.tiny)
    print(f"\nwrote {path}")
    return 0


def _pareto_pruner(name: str, max_epochs: int, given: dict[str, int] | None = None) -> Any:
    """mo_asha as the pruned TPE arm ran it on dataset ``name`` (its options and the pruner, for the replay),
    with its last rung below ``max_epochs``, the epochs the replayed runs trained; ``given`` options
    replace the arm's (the replay grid)."""
    from search.algorithms.pruners import PRUNERS, create_pruner, pruner_options
    from search.space.parse import parse_space

    # The options depend on the arm's sampler, which every dataset of the full and the tiny suite shares.
    doc = space_doc(name, pareto_datasets(False)[name], PARETO_PRUNED, 0, pareto=True)
    doc["budget"] = {**doc["budget"], "max_epochs": max_epochs}
    if given:
        doc["pruner"] = {"name": PARETO_ARMS[PARETO_PRUNED]["pruner"], **given}
    space = parse_space(doc, source="benchmark replay")
    return pruner_options(space, PRUNERS.get(space.pruner.name), space.pruner.options), create_pruner(space)


def _replay_runs(base: dict[int, dict[str, Any]], pruner: Any) -> dict[int, dict[str, Any]]:
    """``pruner``'s decisions on each no-pruning run's own trials, by seed."""
    return {seed: _pareto.replay(b["trials"], pruner, b.get("objectives", PARETO_OBJECTIVES))
            for seed, b in sorted(base.items())}


def _replays(m: Any, base: dict[int, dict[str, Any]], played: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per seed: the epochs a replay (or the oracle) spends to 99% of the no-pruning run's final hypervolume."""
    out = {}
    for seed, b in sorted(base.items()):
        b_epochs, b_hv = m.curve(b["trials"])[-1]
        curve = m.curve(b["trials"], alive=played[seed]["alive"], epochs=played[seed]["epochs"])
        to = _pareto.epochs_to(curve, TARGET_FRACTION * b_hv)
        out[seed] = {"epochs": curve[-1][0], "hv": curve[-1][1], "baseline_epochs": b_epochs, "baseline_hv": b_hv,
                     "epochs_to_target": to, "fraction_of_baseline_epochs": to / b_epochs}
    return out


def _oracle_by_epoch(m: Any, base: dict[int, dict[str, Any]]) -> dict[int, float]:
    """Per epoch ``e`` before the last: the oracle's median fraction when it first decides at epoch ``e``
    (every trial that adds no hypervolume trains ``e`` epochs). It grows with ``e``; where it passes the
    goal, a pruner that needs ``e`` epochs of a curve to tell the trials that will add hypervolume apart
    cannot meet the goal on these trials, however well it reads them."""
    last = max(t["epochs"] for b in base.values() for t in b["trials"])
    return {e: _median_inf([v["fraction_of_baseline_epochs"] for v in _replays(
        m, base, {seed: _pareto.oracle(b["trials"], e) for seed, b in base.items()}).values()])
        for e in range(1, last)}


def _front_kept_by(b: dict[str, Any], alive: list[bool]) -> dict[str, Any]:
    """The points of run ``b``'s final front that its trials still ``alive`` (completed) after a replay keep."""
    kept = [_pareto.point(t["values"]) for t, a in zip(b["trials"], alive) if a]
    return _pareto.front_kept(_pareto.front(_pareto.completed_points(b["trials"])), kept)


def _replay_grid(name: str, base: dict[int, dict[str, Any]], max_epochs: int, measures: list[Any]
                 ) -> list[dict[str, Any]]:
    """The replay with other mo_asha options: whether any setting of its rungs would have met the goal
    on the no-pruning runs' own trials."""
    rows = []
    for given in PARETO_GRID:
        options, pruner = _pareto_pruner(name, max_epochs, given)
        played = _replay_runs(base, pruner)
        lost = sum(_front_kept_by(b, played[seed]["alive"])["lost"] for seed, b in base.items())
        fractions = {m.name: [v["fraction_of_baseline_epochs"] for v in _replays(m, base, played).values()]
                     for m in measures}
        rows.append({"options": options, "front_points_lost": lost,
                     **{f"median_fraction_{k}": _median_inf(v) for k, v in fractions.items()},
                     **{f"reached_{k}": sum(1 for f in v if math.isfinite(f)) for k, v in fractions.items()}})
    return rows


def analyze_pareto(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: fronts kept, the replay, and per hypervolume measure the epochs to target per arm and seed."""
    rows = []
    for name in sorted({r["dataset"] for r in runs}):
        mine = [r for r in runs if r["dataset"] == name]
        by_arm = {arm: {r["seed"]: r for r in mine if r["arm"] == arm} for arm in PARETO_ARMS
                  if any(r["arm"] == arm for r in mine)}
        base = by_arm[PARETO_BASELINE]
        n_trials = min(len(r["trials"]) for r in base.values())
        max_epochs = max(t["epochs"] for r in base.values() for t in r["trials"])
        options, pruner = _pareto_pruner(name, max_epochs)
        played = _replay_runs(base, pruner)
        oracle = {seed: _pareto.oracle(b["trials"], options["min_resource"]) for seed, b in sorted(base.items())}
        fronts: dict[str, Any] = {}
        for arm, seeds in by_arm.items():
            per_seed = {}
            for seed, r in sorted(seeds.items()):
                if seed not in base:
                    continue
                reference = _pareto.front(_pareto.completed_points(base[seed]["trials"]))
                per_seed[seed] = {"at_n_trials": _pareto.front_kept(
                    reference, _pareto.completed_points(r["trials"][:n_trials])),
                    "all_trials": _pareto.front_kept(reference, _pareto.completed_points(r["trials"]))}
            fronts[arm] = {"seeds": per_seed,
                           "lost_at_n_trials": sum(v["at_n_trials"]["lost"] for v in per_seed.values()),
                           "lost": sum(v["all_trials"]["lost"] for v in per_seed.values()),
                           "points": sum(v["all_trials"]["points"] for v in per_seed.values())}
        replay_fronts = {seed: _front_kept_by(b, played[seed]["alive"]) for seed, b in sorted(base.items())}
        measures = _pareto.measures(mine)
        row: dict[str, Any] = {
            "dataset": name, "trials_per_run": n_trials, "max_epochs": max_epochs, "fronts": fronts,
            "replay": {"pruner_options": options,
                       "seeds": {seed: {**p, "front_kept": replay_fronts[seed]} for seed, p in played.items()},
                       "front_points_lost": sum(v["lost"] for v in replay_fronts.values()),
                       "front_points": sum(v["points"] for v in replay_fronts.values())},
            "measures": {m.name: _measure_summary(m, by_arm, base, n_trials, played, oracle) for m in measures},
            "replay_grid": _replay_grid(name, base, max_epochs, measures),
        }
        row["meets_goal"] = {m: v["meets_goal"] for m, v in row["measures"].items()}
        rows.append(row)
    return rows


def _measure_summary(m: Any, by_arm: dict[str, dict[int, dict[str, Any]]], base: dict[int, dict[str, Any]],
                     n_trials: int, played: dict[int, dict[str, Any]], oracle: dict[int, dict[str, Any]]
                     ) -> dict[str, Any]:
    """Hypervolume by ``m``: each arm's epochs to 99% of the no-pruning run's final value (same seed,
    and the median over seeds), the replay's and the oracle's."""
    finals = {seed: m.curve(b["trials"])[-1] for seed, b in base.items()}
    pooled = TARGET_FRACTION * median(hv for _, hv in finals.values())
    arms: dict[str, Any] = {}
    for arm, seeds in by_arm.items():
        per_seed = {}
        for seed, r in sorted(seeds.items()):
            if seed not in finals:
                continue
            b_epochs, b_hv = finals[seed]
            curve = m.curve(r["trials"])
            at_n = curve[min(n_trials, len(curve)) - 1]
            to = _pareto.epochs_to(curve, TARGET_FRACTION * b_hv)
            entry = {"trials": len(r["trials"]), "pruned": sum(1 for t in r["trials"] if t["state"] == "PRUNED"),
                     "epochs": curve[-1][0], "final_hv": curve[-1][1], "epochs_at_n_trials": at_n[0],
                     "hv_at_n_trials": at_n[1], "baseline_hv": b_hv, "baseline_epochs": b_epochs,
                     "epochs_to_target": to, "fraction_of_baseline_epochs": to / b_epochs,
                     "epochs_to_pooled_target": _pareto.epochs_to(curve, pooled)}
            same = SAME_SAMPLER.get(arm)
            if same in by_arm and seed in by_arm[same]:
                s_epochs, s_hv = m.curve(by_arm[same][seed]["trials"])[-1]
                entry["same_sampler_fraction"] = _pareto.epochs_to(curve, TARGET_FRACTION * s_hv) / s_epochs
            per_seed[seed] = entry
        fractions = [v["fraction_of_baseline_epochs"] for v in per_seed.values()]
        arms[arm] = {
            "seeds": per_seed,
            "median_fraction_of_baseline_epochs": _median_inf(fractions),
            "reached": sum(1 for f in fractions if math.isfinite(f)),
            "median_epochs_to_pooled_target": _median_inf([v["epochs_to_pooled_target"] for v in per_seed.values()]),
            "median_epochs": median(v["epochs"] for v in per_seed.values()),
            "median_final_hv": median(v["final_hv"] for v in per_seed.values()),
            "median_hv_at_n_trials": median(v["hv_at_n_trials"] for v in per_seed.values()),
            "median_epochs_at_n_trials": median(v["epochs_at_n_trials"] for v in per_seed.values()),
        }
        if arm in SAME_SAMPLER:
            arms[arm]["median_same_sampler_fraction"] = _median_inf(
                [v.get("same_sampler_fraction", math.inf) for v in per_seed.values()])
    replays = _replays(m, base, played)
    oracles = _replays(m, base, oracle)
    by_epoch = _oracle_by_epoch(m, base)
    pruned = arms.get(PARETO_PRUNED, {})
    return {"pooled_target": pooled, "arms": arms, "replay": replays,
            "replay_median_fraction": _median_inf([v["fraction_of_baseline_epochs"] for v in replays.values()]),
            "replay_median_hv_fraction": median(v["hv"] / v["baseline_hv"] for v in replays.values()),
            "oracle": oracles,
            "oracle_median_fraction": _median_inf([v["fraction_of_baseline_epochs"] for v in oracles.values()]),
            "oracle_by_epoch": by_epoch,
            "latest_epoch_meeting_goal": max((e for e, f in by_epoch.items() if f <= PARETO_GOAL), default=None),
            "meets_goal": pruned.get("median_fraction_of_baseline_epochs", math.inf) <= PARETO_GOAL}


def report_pareto(rows: list[dict[str, Any]], seeds: int) -> None:
    print(f"\nTwo objectives ({', '.join(PARETO_OBJECTIVES)}; {seeds} seeds per arm; compute = epochs trained; "
          f"target = {TARGET_FRACTION:.0%} of the final hypervolume of the {PARETO_BASELINE} run (no pruning) "
          "with the same seed)")
    for measure in ("log", "linear"):
        print(f"\nHypervolume with {measure} params")
        print(table(
            ["dataset", "arm", "trials/run", "pruned", "median epochs", "median final HV", "median HV after n trials",
             "median epochs to target / no-pruning epochs", "reached", "same sampler, unpruned"],
            [(r["dataset"], arm, max(v["trials"] for v in a["seeds"].values()),
              sum(v["pruned"] for v in a["seeds"].values()), a["median_epochs"], a["median_final_hv"],
              a["median_hv_at_n_trials"], a["median_fraction_of_baseline_epochs"],
              f"{a['reached']}/{len(a['seeds'])}", a.get("median_same_sampler_fraction", float("nan")))
             for r in rows for arm, a in r["measures"][measure]["arms"].items()]))
        print(table(["dataset", f"goal: <= {PARETO_GOAL:.0%} of the no-pruning epochs", "replay: epochs to target",
                     "replay: HV kept", "oracle: epochs to target"],
                    [(r["dataset"], "met" if r["meets_goal"][measure] else "MISSED",
                      r["measures"][measure]["replay_median_fraction"],
                      r["measures"][measure]["replay_median_hv_fraction"],
                      r["measures"][measure]["oracle_median_fraction"]) for r in rows]))
    print("\nOracle deciding at epoch e (median epochs to target / no-pruning epochs): the latest decision that can meet"
          " the goal")
    for r in rows:  # one table per dataset: their trials may have different epoch budgets
        epochs = list(r["measures"]["log"]["oracle_by_epoch"])
        print(table(["dataset", "measure", *(f"e={e}" for e in epochs), "latest e meeting the goal"],
                    [(r["dataset"], name, *(f"{f:.3f}" for f in v["oracle_by_epoch"].values()),
                      v["latest_epoch_meeting_goal"] or "none") for name, v in r["measures"].items()]))
    print("\nPoints of the no-pruning run's final front lost (n trials / all trials)")
    print(table(["dataset", "arm", "lost", "of"],
                [(r["dataset"], arm, f"{f['lost_at_n_trials']} / {f['lost']}", f["points"])
                 for r in rows for arm, f in r["fronts"].items()]))
    print("\nReplay: mo_asha's decisions on the no-pruning runs' own trials (same trials, same curves)")
    print(table(["dataset", "seed", "trials pruned", "epochs", "front points lost", "max accuracy short by"],
                [(r["dataset"], seed, len(v["pruned"]), sum(v["epochs"]),
                  f"{v['front_kept']['lost']} of {v['front_kept']['points']}", v["front_kept"]["max_accuracy_short_by"])
                 for r in rows for seed, v in r["replay"]["seeds"].items()]))
    print("\nReplay with other mo_asha options (median epochs to target / no-pruning epochs, seeds reached)")
    print(table(["dataset", "min_resource", "reduction_factor", "keep_front", "log", "linear", "front points lost"],
                [(r["dataset"], g["options"]["min_resource"], g["options"]["reduction_factor"],
                  g["options"]["keep_front"], f"{g['median_fraction_log']:.3f} ({g['reached_log']})",
                  f"{g['median_fraction_linear']:.3f} ({g['reached_linear']})", g["front_points_lost"])
                 for r in rows for g in r["replay_grid"]]))


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
    values = [t["value"] if "value" in t else (t["values"] or [None])[0] for t in r["trials"]]
    best = max((v for v in values if v is not None), default=float("nan"))
    print(f"[{done}/{total}] {r['dataset']} {r['arm']} seed {r['seed']}: {epochs} epochs, best {best:.4f}, "
          f"{r['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
