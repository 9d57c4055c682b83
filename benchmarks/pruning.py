"""Pruning replayed on recorded learning curves: does a pruner throw away the eventual best trial?

The random-search arm of ``benchmarks.accuracy`` trains every trial to its end (no pruner) and
records each one's validation curve and planned epochs. This script replays those trials, in
their order, through Optuna pruners (real ``optuna`` studies, ``report`` / ``should_prune`` per
epoch) and counts, per search, whether the trial with the best final accuracy would have been
pruned, the best final accuracy among the trials that survive, and the epochs pruning saves:

* ``median@epoch``: the median pruner as a space names it (3 start-up trials, 1 warm-up epoch),
  trials compared at the same epoch whatever their schedule's length;
* ``median@progress``: the same pruner with the step = per cent of the trial's own schedule
  (trials compared at equal progress of their cosine/step schedules);
* ``hyperband@progress``: Hyperband (reduction 3) over the same progress steps, brackets as the
  doctor writes them (the sampler side is irrelevant in a replay).

    python -m benchmarks.pruning [--from results/accuracy.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, machine, median, parser, table, write_result

PRUNERS = ("median@epoch", "median@progress", "hyperband@progress")


def _pruner(name: str) -> Any:
    import optuna

    if name.startswith("median"):
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=5, max_resource=100, reduction_factor=3)


def replay(trials: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Feed the trials' curves to pruner ``name``; which survive, and the epochs they would train."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=_pruner(name),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    survived, epochs = [], 0
    for t in trials:
        trial = study.ask()
        total = len(t["curve"])
        pruned = False
        for e, v in enumerate(t["curve"], start=1):
            epochs += 1
            step = e if name.endswith("@epoch") else round(100 * e / total)
            trial.report(v, step)
            if e < total and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, t["curve"][-1])
            survived.append(t["number"])
    best = max(trials, key=lambda t: t["curve"][-1])
    kept = [t["curve"][-1] for t in trials if t["number"] in survived]
    return {"best_pruned": best["number"] not in survived, "best_final": best["curve"][-1],
            "best_kept": max(kept) if kept else None, "epochs": epochs,
            "epochs_unpruned": sum(len(t["curve"]) for t in trials), "trials": len(trials),
            "survived": len(survived)}


def _synthetic() -> dict[str, Any]:
    """--tiny: 8 made-up curves (no training): fast starters that level off, and one slow starter
    with a longer schedule that ends best, as cosine + EMA runs do."""
    trials = []
    for i in range(8):
        n = 10 if i != 5 else 20
        top = 0.6 + 0.02 * i
        curve = [round(top * (1 - 0.5 ** (e + 1)), 4) for e in range(n)]
        if i == 5:  # slow starter: low for half its schedule, best at the end
            curve = [round(0.1 + 0.8 * (e / (n - 1)) ** 3, 4) for e in range(n)]
        trials.append({"number": i, "value": curve[-1], "curve": curve, "planned_epochs": n})
    return {"arm": "random", "trials": trials}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", type=Path, default=RESULTS / "accuracy.json")
    p.add_argument("--arms", default="random", help="replay the complete trials of these arms' searches (random: "
                                                     "unpruned, unbiased; optuna's survived its median pruner)")
    args = p.parse_args(argv)
    source = args.source
    saved = {"cells": {"synthetic/random/0": _synthetic()}} if args.tiny else json.loads(source.read_text())
    searches = []
    for key, cell in sorted(saved["cells"].items()):
        if cell.get("arm") not in args.arms.split(",") or "trials" not in cell:
            continue
        # Complete trials with their whole curve (a trial cut by the budget is not a finished run).
        trials = [t for t in cell["trials"] if t["value"] is not None and t.get("curve")
                  and len(t["curve"]) == t.get("planned_epochs", len(t["curve"]))]
        if len(trials) >= 4:
            searches.append({"cell": key, **{n: replay(trials, n) for n in PRUNERS}})
    rows = []
    summary: dict[str, Any] = {}
    for n in PRUNERS:
        rs = [s[n] for s in searches]
        summary[n] = {"searches": len(rs), "best_pruned": sum(r["best_pruned"] for r in rs),
                      "median_loss": median(r["best_final"] - (r["best_kept"] or 0.0) for r in rs),
                      "epochs_share": (sum(r["epochs"] for r in rs) / max(1, sum(r["epochs_unpruned"] for r in rs)))}
        rows.append([n, len(rs), summary[n]["best_pruned"], summary[n]["median_loss"], summary[n]["epochs_share"]])
    print(table(["pruner", "searches", "best trial pruned", "median accuracy lost", "epochs trained (share)"], rows))
    out = write_result(args.out, "pruning", machine(), {"source": str(source), "searches": searches,
                                                         "summary": summary}, args.tiny)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
