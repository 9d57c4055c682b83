"""Constraints and stop rules: do constraints steer TPE to the feasible region, and what do stops save?

* constrained: TPE on digits without ``constraints:`` first; its trials' median latency becomes
  ``latency_ms: {max: ...}`` (about half of what TPE proposes is then infeasible). The same
  study is run again with the constraint: share of feasible trials proposed with vs without
  (judged by the same bound on the recorded latency). Goal: >= 1.5x.
* stops: the saved search-efficiency runs (``results/search_efficiency.json``: per-trial epochs
  and values, in trial order) are replayed through :func:`search.study.stopping.evaluate`:
  epochs a ``target`` (95% / 99% of the best value any run found) or ``patience`` stop would
  have saved, and how often patience stopped before the run's own best / the 99% target.

    python -m benchmarks.study_rules [--seeds 3] [--trials 20]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine, median, parser, setup_threads, table, write_result

GOAL = 1.5
PATIENCE = ((5, 0.002), (10, 0.002))
TARGETS = (0.95, 0.99)


def space_doc(name: str, seed: int, trials: int, tiny: bool) -> dict[str, Any]:
    return {"study": name, "objective": "accuracy", "seed": seed,
            "dataset": {"name": "digits", "limit": 300 if tiny else 600},
            "budget": {"n_trials": trials, "max_epochs": 1 if tiny else 2},
            "sampler": {"name": "tpe", "n_startup_trials": 5}, "pruner": "none",
            "params": {"lr": {"float": [0.001, 0.05], "log": True}, "width": {"choices": [4, 8, 16, 32, 64]},
                       "depth": {"int": [1, 3]}, "input_size": {"choices": [8, 16, 32]}}}


def run(doc: dict[str, Any]) -> list[dict[str, Any]]:
    import optuna

    from search.space.parse import parse_space
    from search.study.runner import run_trials
    from search.study.create import create_study

    space = parse_space(doc, source="benchmark")
    study = create_study(space, optuna.storages.InMemoryStorage())
    run_trials(study, space, device="cpu", worker_seed=doc["seed"])
    # Every proposal the sampler made: completed trials, and those stopped before training because
    # their size or latency broke a bound (PRUNED, 0 epochs; they have no accuracy).
    return [{"number": t.number, "state": t.state.name, "value": t.value, "latency_ms": t.user_attrs.get("latency_ms"),
             "params_count": t.user_attrs.get("n_params"), "params": t.params,
             "feasible": t.user_attrs.get("feasible"), "epochs": len(t.user_attrs.get("history") or [])}
            for t in study.trials if t.user_attrs.get("n_params") is not None]


METRICS = {"latency_ms": "latency_ms", "params": "params_count"}  # constraint -> field of run()'s rows


def constrained(seeds: int, trials: int, tiny: bool, metric: str = "latency_ms") -> dict[str, Any]:
    out: dict[str, Any] = {"metric": metric, "trials": trials, "runs": []}
    field = METRICS[metric]
    for seed in range(seeds):
        free = run(space_doc(f"free-{seed}", seed, trials, tiny))
        bound = round(median(t[field] for t in free), 4)
        doc = space_doc(f"constrained-{seed}", seed, trials, tiny)
        doc["constraints"] = {metric: {"max": bound}}
        held = run(doc)
        share = lambda ts: sum(t[field] <= bound for t in ts) / len(ts)  # noqa: E731
        # Epochs trained on trials that break the bound: the unconstrained run trains them all.
        wasted = lambda ts: sum(t["epochs"] for t in ts if t[field] > bound)  # noqa: E731
        out["runs"].append({"seed": seed, "bound": bound, "share_without": share(free),
                            "share_with": share(held), "infeasible_epochs_without": wasted(free),
                            "infeasible_epochs_with": wasted(held), "epochs_without": sum(t["epochs"] for t in free),
                            "epochs_with": sum(t["epochs"] for t in held), "free": free, "constrained": held})
        print(f"seed {seed}: {metric} max {bound}: feasible without {share(free):.2f}, with {share(held):.2f}; "
              f"epochs on infeasible trials {wasted(free)} -> {wasted(held)}", flush=True)
    without = median(r["share_without"] for r in out["runs"])
    with_ = median(r["share_with"] for r in out["runs"])
    out.update(share_without=without, share_with=with_, ratio=with_ / without if without else float("nan"))
    out["meets_goal"] = out["ratio"] >= GOAL
    return out


def replay_stops(saved: Path) -> list[dict[str, Any]]:
    """Replay the saved search-efficiency runs through the stop rules."""
    import optuna
    from optuna.distributions import FloatDistribution

    from search.space.parse import parse_space
    from search.study.stopping import evaluate

    runs = json.loads(saved.read_text())["runs"]
    rows = []
    for name in sorted({r["dataset"] for r in runs}):
        mine = [r for r in runs if r["dataset"] == name]
        best_known = max(t["value"] for r in mine for t in r["trials"] if t["value"] is not None)
        rules = [(f"target {f:.0%}", {"target": round(f * best_known, 6)}) for f in TARGETS]
        rules += [(f"patience {p}, min_delta {d}", {"patience": p, "min_delta": d}) for p, d in PATIENCE]
        for label, budget in rules:
            space = parse_space({"study": "x", "budget": {"n_trials": 30, **budget}})
            saved_epochs, total_epochs, stopped, early, below99, cut99 = [], [], 0, 0, 0, 0
            for r in mine:
                frozen = []
                for t in r["trials"]:
                    state = optuna.trial.TrialState.COMPLETE if t["value"] is not None else \
                        optuna.trial.TrialState.PRUNED
                    ft = optuna.trial.create_trial(state=state, value=t["value"], params={"lr": 0.01},
                                                   distributions={"lr": FloatDistribution(0.001, 0.1)})
                    ft.number = t["number"]
                    frozen.append(ft)
                total = sum(t["epochs"] for t in r["trials"])
                used = total
                for k in range(1, len(frozen) + 1):
                    if evaluate(space, frozen[:k], maximize=True) is not None:
                        used = sum(t["epochs"] for t in r["trials"][:k])
                        stopped += k < len(frozen)
                        run_best = max(t["value"] for t in r["trials"] if t["value"] is not None)
                        got = max((t["value"] for t in r["trials"][:k] if t["value"] is not None), default=0.0)
                        early += got < run_best
                        below99 += got < 0.99 * best_known
                        cut99 += got < 0.99 * best_known <= run_best  # the full run got there later
                        break
                saved_epochs.append(total - used)
                total_epochs.append(total)
            rows.append({"dataset": name, "rule": label, "runs": len(mine), "stopped_early": stopped,
                         "median_epochs_saved": median(saved_epochs),
                         "share_saved": sum(saved_epochs) / sum(total_epochs),
                         "stopped_before_run_best": early if label.startswith("patience") else None,
                         "stopped_below_99pct_of_best_known": below99 if label.startswith("patience") else None,
                         "cut_before_99pct": cut99 if label.startswith("patience") else None,
                         "runs_reaching_99pct": sum(max(t["value"] or 0.0 for t in r["trials"]) >= 0.99 * best_known
                                                    for r in mine)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--saved", type=Path, default=RESULTS / "search_efficiency.json")
    p.add_argument("--metric", choices=list(METRICS), default="latency_ms",
                   help="the constrained metric (params: deterministic; latency_ms: measured, noisy on a busy machine)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = machine()
    start = time.perf_counter()
    seeds, trials = (1, 6) if args.tiny else (args.seeds, args.trials)
    con = constrained(seeds, trials, args.tiny, args.metric)
    print(table(["seed", f"{args.metric} max", "feasible share, TPE without constraints", "with constraints",
                 "epochs on infeasible trials, without / with", "epochs in all, without / with"],
                [(r["seed"], r["bound"], r["share_without"], r["share_with"],
                  f"{r['infeasible_epochs_without']} / {r['infeasible_epochs_with']}",
                  f"{r['epochs_without']} / {r['epochs_with']}") for r in con["runs"]]))
    print(f"median share: without {con['share_without']:.2f}, with {con['share_with']:.2f}: "
          f"{con['ratio']:.2f}x (goal >= {GOAL}x: {'met' if con['meets_goal'] else 'MISSED'})")
    stops = replay_stops(args.saved) if args.saved.is_file() else []
    if stops:
        print(table(["dataset", "rule", "runs stopped early", "median epochs saved", "share of epochs saved",
                     "patience: stopped before the run's best", "patience: stopped below 99% of best known",
                     "patience: stopped before 99% in a run that got there later"],
                    [(r["dataset"], r["rule"], f"{r['stopped_early']}/{r['runs']}", r["median_epochs_saved"],
                      f"{r['share_saved']:.0%}", r["stopped_before_run_best"], r["stopped_below_99pct_of_best_known"],
                      f"{r['cut_before_99pct']} of {r['runs_reaching_99pct']}" if r["cut_before_99pct"] is not None else "-")
                     for r in stops]))
    name = "study_rules" if args.metric == "latency_ms" else f"study_rules-{args.metric}"
    path = write_result(args.out, name, info, {"goal": GOAL, "constrained": con, "stops": stops,
                                                         "wall_seconds": time.perf_counter() - start}, args.tiny)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
