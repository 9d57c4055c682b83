"""Worker scaling: trials per minute with 1, 2, 4 worker processes on SQLite, PostgreSQL and
JournalStorage, with a trivial objective (storage overhead) and with the real trainer.

Each cell creates a fresh study (fresh SQLite / journal file; a new study in one throwaway
PostgreSQL database on 127.0.0.1), starts N worker processes that each run exactly what
``strategy-search worker`` runs (``load_study`` + ``run_trials``: trial lock, heartbeat,
stale-trial check, ask/tell), waits until all have imported and loaded the study, then starts
them together; trials/min = trials / (last worker done - start). The trivial objective samples
the space and reports three "epochs" like a trial but trains nothing; the real one trains small
CNNs on digits. Cells are repeated (median) in rotating order.

    python -m benchmarks.worker_scaling [--postgres-url URL]   # else a throwaway server is started
    python -m benchmarks.worker_scaling --tiny
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, machine, median, parser, setup_threads, table, write_result

MODES = ("trivial", "real")
EFFICIENT = 0.8  # below this parallel efficiency (speed-up / workers) we call it contention


def space_doc(study: str, mode: str, n_trials: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "lr": {"float": [0.001, 0.05], "log": True},
        "batch_size": {"choices": [32, 64]},
        "optimizer": {"choices": ["adamw", "sgd"]},
        "width": 16,
        "depth": 2,
    }
    # Random sampling and no pruning: every trial costs the same, so throughput measures the storage.
    return {"study": study, "objective": "accuracy", "dataset": {"name": "digits"} if mode == "real" else "digits",
            "budget": {"n_trials": n_trials, "max_epochs": 3}, "sampler": "random", "pruner": "none", "seed": 0,
            "params": params}


# ----------------------------------------------------------------------------- worker process


def worker(url: str, study_name: str, mode: str, go: Path) -> int:
    """One worker: load, get ready, wait for ``go``, then the library's worker loop."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from search.data.datasets import prepare
    from search.study import runner
    from search.study.objective import Objective

    if mode == "trivial":
        class TrivialObjective(Objective):
            """Samples and records like a trial (config, 3 reported epochs, history); trains nothing."""

            def check_ready(self) -> None:
                pass

            def __call__(self, trial: optuna.Trial) -> float:
                config = self.space.sample(trial)
                trial.set_user_attr("config", config.to_dict())
                history = []
                value = 0.0
                for epoch in range(1, 4):
                    value = 1.0 - abs(math.log10(config.lr) + 2.0) / 3.0 - 0.05 / epoch
                    history.append({"epoch": epoch, "value": value})
                    trial.report(value, epoch)
                trial.set_user_attr("history", history)
                return value

        runner.Objective = TrivialObjective  # type: ignore[misc]  # the worker loop under test stays as is

    # Timers around the library's own pieces (behaviour unchanged): waiting for the trial lock, the
    # whole "lock + stale check + count + ask", and "objective + tell".
    stats = {"lock_wait_s": 0.0, "next_trial_s": 0.0, "run_one_s": 0.0}

    class TimedLock(runner.TrialLock):  # type: ignore[misc,valid-type]
        @contextlib.contextmanager
        def hold(self) -> Iterator[None]:
            start = time.perf_counter()
            with super().hold():
                stats["lock_wait_s"] += time.perf_counter() - start
                yield

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stats[name] += time.perf_counter() - start
        return wrapper

    runner.TrialLock = TimedLock  # type: ignore[misc]
    runner._next_trial = timed("next_trial_s", runner._next_trial)
    runner._run_one = timed("run_one_s", runner._run_one)

    study, space = runner.load_study(study_name, url)
    if mode == "real":
        Objective(space, device="cpu").check_ready()
        prepare(space.dataset, None, "stretch", torch.device("cpu"))  # decode before the clock starts
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    start, cpu = time.time(), time.process_time()
    summary = runner.run_trials(study, space, storage_url=url, device="cpu",
                                worker_seed=runner.worker_seed_for(space))
    print(json.dumps({"trials": summary.total, "start": start, "end": time.time(), "counts": summary.counts,
                      "cpu_s": time.process_time() - cpu, **stats}), flush=True)
    return 0


# ----------------------------------------------------------------------------- one cell


def run_cell(url: str, study: str, mode: str, workers: int, n_trials: int, tmp: Path) -> dict[str, Any]:
    from search.space import parse_space
    from search.study.runner import create_study
    from search.study.storage import open_storage

    space = parse_space(space_doc(study, mode, n_trials), source=f"benchmark {study}")
    create_study(space, open_storage(url))
    go = tmp / f"{study}.go"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "benchmarks.worker_scaling", "--worker", url, study, mode, str(go)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    try:
        for p in procs:
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"worker did not start: {line}{p.stderr.read() if p.stderr else ''}")
        start = time.time()
        go.touch()
        outs = [p.communicate(timeout=1800) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    reports = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    trials = sum(r["trials"] for r in reports)
    seconds = max(r["end"] for r in reports) - start
    per_trial = lambda key: 1000.0 * sum(r[key] for r in reports) / max(1, trials)  # noqa: E731
    return {"trials": trials, "seconds": seconds, "trials_per_min": 60.0 * trials / seconds,
            "per_worker": [r["trials"] for r in reports],
            # Busy cores: the workers' CPU time over the cell's wall time.
            "cores_busy": sum(r["cpu_s"] for r in reports) / seconds,
            "lock_wait_ms": per_trial("lock_wait_s"), "next_trial_ms": per_trial("next_trial_s"),
            "run_one_ms": per_trial("run_one_s"),
            "complete": sum(r["counts"].get("COMPLETE", 0) for r in reports)}


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]))
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="*", default=None, help="worker counts (default 1 2 4; tiny 2)")
    p.add_argument("--storages", nargs="*", default=None, choices=("sqlite", "postgresql", "journal"),
                   help="default: all three (tiny: sqlite journal)")
    p.add_argument("--modes", nargs="*", default=None, choices=MODES, help="default: both (tiny: trivial)")
    p.add_argument("--trials", type=int, default=None, help="trials per cell, trivial objective (default 120)")
    p.add_argument("--real-trials", type=int, default=None, help="trials per cell, real trainer (default 24)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per cell (default 3, tiny 1)")
    p.add_argument("--postgres-url", default=None, help="use this database instead of a throwaway server")
    args = p.parse_args(argv)
    setup_threads(args.threads)  # workers inherit it through OMP_NUM_THREADS
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = args.workers or ([2] if args.tiny else [1, 2, 4])
    storages = args.storages or (["sqlite", "journal"] if args.tiny else ["sqlite", "postgresql", "journal"])
    modes = args.modes or (["trivial"] if args.tiny else list(MODES))
    per_mode = {"trivial": args.trials or (4 if args.tiny else 120),
                "real": args.real_trials or (4 if args.tiny else 24)}
    reps = args.reps or (1 if args.tiny else 3)
    info = machine()
    notes: dict[str, str] = {}
    cells: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmpdir, _postgres(storages, args, notes) as pg_url:
        tmp = Path(tmpdir)
        active = [s for s in storages if s != "postgresql" or pg_url]
        plan = [(mode, storage, w) for mode in modes for storage in active for w in counts]
        for rep in range(reps):
            order = plan if rep % 2 == 0 else plan[::-1]
            for i, (mode, storage, w) in enumerate(order):
                study = f"scale-{mode}-{storage}-{w}-{rep}"
                url = {"sqlite": f"sqlite:///{tmp}/{study}.db", "journal": f"journal:{tmp}/{study}.log",
                       "postgresql": pg_url}[storage]
                r = run_cell(url, study, mode, w, per_mode[mode], tmp)
                r.update({"mode": mode, "storage": storage, "workers": w, "rep": rep})
                cells.append(r)
                print(f"[{rep + 1}/{reps} {i + 1}/{len(plan)}] {mode:7s} {storage:10s} workers={w}: "
                      f"{r['trials']} trials in {r['seconds']:.1f}s = {r['trials_per_min']:.0f}/min", flush=True)

    rows = []
    for mode in modes:
        for storage in [s for s in storages if any(c["storage"] == s for c in cells)]:
            base = None
            for w in counts:
                mine = [c for c in cells if (c["mode"], c["storage"], c["workers"]) == (mode, storage, w)]
                tpm = median(c["trials_per_min"] for c in mine)
                base = base or tpm
                speedup = tpm / base
                rows.append({"mode": mode, "storage": storage, "workers": w, "trials_per_min": tpm,
                             "ms_per_trial": 60000.0 / tpm, "speedup": speedup,
                             "efficiency": speedup * counts[0] / w, "contention": speedup * counts[0] / w < EFFICIENT,
                             **{k: median(c[k] for c in mine) for k in
                                ("cores_busy", "lock_wait_ms", "next_trial_ms", "run_one_ms")}})
    print(f"\nWorker scaling (median of {reps}; speed-up vs {counts[0]} worker(s); efficiency = speed-up per added"
          f" worker; contention when < {EFFICIENT};"
          f" {os.cpu_count()} CPU cores)")
    print(table(["objective", "storage", "workers", "trials/min", "speed-up", "efficiency", "contention",
                 "cores busy", "ms/trial: lock wait", "lock+ask", "objective+tell"],
                [(r["mode"], r["storage"], r["workers"], r["trials_per_min"], r["speedup"], r["efficiency"],
                  "yes" if r["contention"] else "", r["cores_busy"], r["lock_wait_ms"], r["next_trial_ms"],
                  r["run_one_ms"]) for r in rows]))
    print("ms/trial columns: seconds each worker spent there, summed over workers, per trial "
          "(lock+ask includes the lock wait)")
    for k, v in notes.items():
        print(f"note: {k}: {v}")
    path = write_result(args.out, "worker_scaling", info,
                        {"trials_per_cell": per_mode, "reps": reps, "notes": notes,
                         "spaces": {m: space_doc("<study>", m, per_mode[m]) for m in modes},
                         "summary": rows, "cells": cells}, args.tiny)
    print(f"\nwrote {path}")
    return 0


class _postgres:
    """The PostgreSQL URL for the run: given, a throwaway server, or None (with a note why)."""

    def __init__(self, storages: list[str], args: Any, notes: dict[str, str]) -> None:
        self.wanted = "postgresql" in storages
        self.args, self.notes = args, notes
        self._ctx: Any = None

    def __enter__(self) -> str | None:
        if not self.wanted:
            return None
        if self.args.postgres_url:
            return self.args.postgres_url
        from benchmarks._postgres import throwaway_postgres

        try:
            self._ctx = throwaway_postgres()
            url = self._ctx.__enter__()
            self.notes["postgresql"] = "throwaway local server on 127.0.0.1 (fsync on, default settings)"
            return url
        except Exception as exc:  # noqa: BLE001 - a missing server skips the column, with the reason
            self._ctx = None
            self.notes["postgresql"] = f"skipped: {exc}"
            print(f"PostgreSQL skipped: {exc}", flush=True)
            return None

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


if __name__ == "__main__":
    sys.exit(main())
