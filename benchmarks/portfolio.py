"""Choose the doctor's portfolio offline on the accuracy suite (greedy, as zero-shot portfolios are).

Every candidate (changes to the recipe, below) trains once on every task of the suite
(benchmarks/tasks, seed 0), with the recipe sized to the task and the flips or quarter turns its
kind allows (as the doctor's orientation probe would find). Starting from the recipe alone, the
entry that raises the suite's sum of best-so-far validation accuracies most is added, until
``--size`` entries or no entry adds anything: the idea behind AutoGluon's presets and TabRepo's
zero-shot portfolios. ``--write`` rewrites search/tools/doctor/portfolio.yaml with the choice.

    python -m benchmarks.portfolio [--jobs 2] [--size 4] [--epochs-scale 0.5] [--write]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, parser, setup_threads, table, write_result
from benchmarks.tasks import TASKS, build

CANDIDATES: list[dict[str, Any]] = [
    {"name": "wide-regularized", "why": "more capacity held back by dropout and decay (small, many-class data)",
     "params": {"width": 48, "dropout": 0.1, "weight_decay": 0.1}},
    {"name": "hot-smooth", "why": "a higher learning rate with stronger label smoothing (airbench's 0.2)",
     "params": {"lr": 0.006, "label_smoothing": 0.2}},
    {"name": "shallow-fast", "why": "one stage less and smaller batches: more steps for the same time "
                                    "(tiny data, noisy labels)", "params": {"depth": 2, "batch_size": 16, "lr": 0.002}},
    {"name": "deep", "why": "one stage more", "params": {"depth": 4}},
    {"name": "mixup", "why": "MixUp against overfitting", "params": {"mix": "mixup", "mix_alpha": 0.2}},
    {"name": "cool-no-smoothing", "why": "a lower rate, no label smoothing (clean, easy data)",
     "params": {"lr": 0.0015, "label_smoothing": 0.0}},
    {"name": "strong-decay", "why": "strong decoupled weight decay", "params": {"weight_decay": 0.2}},
]
ORIENTATION = {"d4": "no_orientation", "canonical": "none"}


def _orientation(task: str) -> str:
    return next((ORIENTATION[f] for f in TASKS[task].flags if f in ORIENTATION), "mirror_free")


def run_one(job: tuple[str, str, float, str]) -> dict[str, Any]:
    task, name, scale, root = job
    setup_threads(1)
    os.environ["STRATEGY_SEARCH_CACHE"] = str(Path(root) / "cache")
    logging.basicConfig(level=logging.WARNING)
    from search.core.config import TrialConfig
    from search.core.spec import DatasetSpec
    from search.data.datasets import load_dataset
    from search.tools.doctor.recipe import portfolio_configs, recipe
    from search.train.loop import train

    spec = DatasetSpec(path=str(build(task, Path(root))))
    n_train = len(load_dataset(spec, 16).train)
    base = {**TrialConfig().to_dict(), **recipe(n_train, 16, _orientation(task)), "input_size": 16, "seed": 0}
    base["epochs"] = max(6, round(base["epochs"] * scale))
    entries = [{"name": "recipe", "params": {}}] + [c for c in CANDIDATES if c["name"] == name]
    config = dict(portfolio_configs(base, entries))[name]
    cpu = time.process_time()
    result = train(TrialConfig.from_dict(config), spec, evaluate_test=False, label=f"{task}/{name}")
    return {"task": task, "candidate": name, "val": result.val.accuracy, "cpu_s": time.process_time() - cpu,
            "epochs": config["epochs"]}


def greedy(scores: dict[str, dict[str, float]], size: int) -> list[str]:
    """Candidates in the order they are added to the recipe (the recipe first)."""
    tasks = sorted({t for s in scores.values() for t in s})
    chosen = ["recipe"]
    best = {t: scores["recipe"].get(t, 0.0) for t in tasks}
    while len(chosen) < size + 1:
        gains = {c: sum(max(best[t], s.get(t, 0.0)) - best[t] for t in tasks)
                 for c, s in scores.items() if c not in chosen}
        if not gains or max(gains.values()) <= 0:
            break
        pick = max(gains, key=gains.get)
        chosen.append(pick)
        best = {t: max(best[t], scores[pick].get(t, 0.0)) for t in tasks}
    return chosen


def write_portfolio(chosen: list[str], path: Path) -> None:
    import yaml

    entries = [c for name in chosen[1:] for c in CANDIDATES if c["name"] == name]
    head = ["# The doctor's portfolio: configurations enqueued after the recipe, before TPE samples.",
            "# Each entry names changes to the recipe as the doctor sized it for the data (search/tools/doctor/recipe.py);",
            "# the doctor fits each to the space it writes (numbers clipped into ranges, values the space lacks",
            "# left to the sampler, duplicates skipped) and says what it changed.",
            "# Chosen by `python -m benchmarks.portfolio --write` (greedy over the accuracy suite)."]
    body = yaml.safe_dump({"selected_by": "benchmarks/portfolio.py", "entries": entries}, sort_keys=False, width=110)
    path.write_text("\n".join(head) + "\n" + body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--size", type=int, default=4, help="portfolio entries at most (besides the recipe)")
    p.add_argument("--epochs-scale", type=float, default=0.5, help="share of the recipe's epochs each run trains")
    p.add_argument("--root", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "strategy-search-accuracy")
    p.add_argument("--write", action="store_true", help="rewrite search/tools/doctor/portfolio.yaml")
    args = p.parse_args(argv)
    setup_threads(1)
    tasks = ["cells-imbalanced"] if args.tiny else list(TASKS)
    names = ["recipe", "shallow-fast"] if args.tiny else ["recipe"] + [c["name"] for c in CANDIDATES]
    scale = 0.1 if args.tiny else args.epochs_scale
    info = machine()
    for t in tasks:
        build(t, args.root)
    jobs = [(t, n, scale, str(args.root)) for t in tasks for n in names]
    # Workers of a ProcessPoolExecutor are not daemons: a cache build inside one may start its own pool.
    pool = ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) if args.jobs > 1 else None
    runner = map if pool is None else (lambda fn, items: (f.result() for f in as_completed(
        [pool.submit(fn, item) for item in items])))
    runs = list(runner(run_one, jobs))
    scores: dict[str, dict[str, float]] = {}
    for r in runs:
        scores.setdefault(r["candidate"], {})[r["task"]] = r["val"]
    chosen = greedy(scores, args.size)
    print(table(["candidate", *tasks], [[n, *(scores[n].get(t, float("nan")) for t in tasks)] for n in names]))
    print("portfolio (in order):", ", ".join(chosen))
    out = write_result(args.out, "portfolio", info, {"runs": runs, "scores": scores, "chosen": chosen,
                                                     "candidates": CANDIDATES, "epochs_scale": scale}, args.tiny)
    if args.write and not args.tiny:
        write_portfolio(chosen, Path(__file__).resolve().parents[1] / "search/tools/doctor/portfolio.yaml")
        print("rewrote search/tools/doctor/portfolio.yaml")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
