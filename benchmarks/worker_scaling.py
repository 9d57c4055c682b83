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
    python -m benchmarks.worker_scaling --objective sleep --seconds 2 --workers 1 32 64 \
        --storages sqlite postgresql proxy journal

Sleep trials (``--objective sleep``) sleep three times ``seconds`` / 3 and report three epochs:
the storage calls of a real trial with the CPU idle, as while a GPU trains. Their workers run as
threads (each one a full worker: its own storage, connection and trial lock) of at most 4
processes, so 64-128 workers fit in memory.
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
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, child_env, machine, median, parser, setup_threads, table, write_result

MODES = ("trivial", "real", "sleep")
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


def sleep_objective(base: type, seconds: float) -> type:
    """An Objective that samples and records like a trial and reports three epochs of ``seconds`` / 3
    of sleep each: the storage calls of a real trial while the CPU stays idle, as when a GPU trains."""
    import optuna

    class SleepObjective(base):  # type: ignore[misc,valid-type]
        def check_ready(self) -> None:
            pass

        def __call__(self, trial: optuna.Trial) -> float:
            config = self.space.sample(trial)
            trial.set_user_attr("config", config.to_dict())
            history = []
            value = 0.0
            for epoch in range(1, 4):
                time.sleep(seconds / 3)
                value = 1.0 - abs(math.log10(config.lr) + 2.0) / 3.0 - 0.05 / epoch
                history.append({"epoch": epoch, "value": value})
                trial.report(value, epoch)
            trial.set_user_attr("history", history)
            return value

    return SleepObjective


def run_worker_thread(url: str, study_name: str, n_trials: int | None = None,
                      gate: Callable[[], None] | None = None) -> dict[str, Any]:
    """One worker as the library runs it (``load_study`` + ``run_trials``, own storage and connection),
    timing each "lock + budget + ask": usable from threads (sleep trials) and tests. ``gate``: called
    once the study is loaded, returns when the cell's clock starts."""
    from search.study import runner
    from search.study.load import load_study

    times: list[float] = []
    study, space = load_study(study_name, url)
    if gate is not None:
        gate()
    start, cpu = time.time(), time.thread_time()
    _timed_next.calls[threading.get_ident()] = times
    _timed_next.first[threading.get_ident()] = None
    summary = runner.run_trials(study, space, device="cpu", n_trials=n_trials,
                                worker_seed=runner.worker_seed_for(space) + threading.get_ident() % 1000)
    return {"trials": summary.total, "start": start,
            "first_claim": _timed_next.first.get(threading.get_ident()), "end": time.time(), "counts": summary.counts,
            "cpu_s": time.thread_time() - cpu, "next_trial": times}


class _timed_next:
    """Wraps runner._next_trial once per process: per-thread lists of its durations (s)."""

    calls: dict[int, list[float]] = {}
    first: dict[int, float | None] = {}  # when each thread's first claim began (epoch s)

    @classmethod
    def install(cls) -> None:
        from search.study import runner

        if getattr(runner._next_trial, "_timed", False):
            return
        inner = runner._next_trial

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if cls.first.get(threading.get_ident(), 0.0) is None:
                cls.first[threading.get_ident()] = time.time()
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                cls.calls.setdefault(threading.get_ident(), []).append(time.perf_counter() - t0)

        wrapper._timed = True  # type: ignore[attr-defined]
        runner._next_trial = wrapper  # type: ignore[assignment]


def worker(url: str, study_name: str, mode: str, go: Path, threads: int = 1, seconds: float = 2.0) -> int:
    """One worker process (``threads`` workers in it for sleep trials): load, get ready, wait for ``go``,
    then the library's worker loop."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from search.data.datasets import prepare
    from search.study import runner
    from search.study.load import load_study
    from search.study.objective import Objective

    if mode in ("sleep", "trivial"):
        # trivial: the same sampling, records and three reports, with no sleep (storage overhead alone)
        runner.Objective = sleep_objective(Objective, seconds if mode == "sleep" else 0.0)  # type: ignore[misc]

    if mode == "real":
        _, space = load_study(study_name, url)
        Objective(space, device="cpu").check_ready()
        prepare(space.dataset, None, "stretch", torch.device("cpu"))  # decode before the clock starts
    _timed_next.install()
    # Each worker loads the study before the clock starts, as a worker that runs for hours pays that
    # once; the cell measures the study's throughput, and the start-up is reported apart ("startup_s").
    loaded, started = threading.Barrier(threads + 1), threading.Event()

    def gate() -> None:
        loaded.wait()
        started.wait()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(run_worker_thread, url, study_name, None, gate) for _ in range(threads)]
        loaded.wait()
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.005)
        started.set()
        reports = [f.result() for f in futures]
    print(json.dumps(reports), flush=True)
    return 0


# ----------------------------------------------------------------------------- one cell


PROCESSES = int(os.environ.get("WORKER_SCALING_PROCESSES", "4"))  # sleep trials: workers are threads of this many
# processes at most (each imports torch: ~0.5 GB)


def run_cell(url: str, study: str, mode: str, workers: int, n_trials: int, tmp: Path, seconds: float = 2.0,
             count_url: str | None = None) -> dict[str, Any]:
    from search.space.parse import parse_space
    from search.study.create import create_study
    from search.storage.backend import open_storage

    space = parse_space(space_doc(study, mode, n_trials), source=f"benchmark {study}")
    store = open_storage(url)
    create_study(space, store)
    getattr(getattr(store, "engine", None), "dispose", lambda: None)()
    go = tmp / f"{study}.go"
    env = child_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    procs_n = min(workers, PROCESSES) if mode == "sleep" else workers
    split = [workers // procs_n + (1 if i < workers % procs_n else 0) for i in range(procs_n)]
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.worker_scaling", "--worker", url, study, mode,
                               str(go), str(k), str(seconds)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in split]
    counter = _Connections(count_url)
    try:
        for p in procs:
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"worker did not start: {line}{p.stderr.read() if p.stderr else ''}")
        start = time.time()
        go.touch()
        with counter:
            outs = [p.communicate(timeout=3600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    reports = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {err[-2000:]}")
        reports.extend(json.loads(out.strip().splitlines()[-1]))
    trials = sum(r["trials"] for r in reports)
    seconds_run = max(r["end"] for r in reports) - start
    asks = sorted(1000.0 * t for r in reports for t in r["next_trial"])
    return {"trials": trials, "seconds": seconds_run, "trials_per_min": 60.0 * trials / seconds_run,
            "per_worker": [r["trials"] for r in reports],
            # Busy cores: the workers' CPU time over the cell's wall time.
            "cores_busy": sum(r["cpu_s"] for r in reports) / seconds_run,
            "ask_median_ms": _pct(asks, 0.5), "ask_p95_ms": _pct(asks, 0.95),
            "ask_mean_ms": sum(asks) / max(len(asks), 1),
            "connections": counter.peak,
            # Where the cell's wall time went: until the last worker made its first claim (its set-up in
            # run_trials and the queue for the first claims), and from the first worker to finish until
            # the last did (the tail).
            "startup_s": max((r["first_claim"] or r["end"]) for r in reports) - start,
            "tail_s": max(r["end"] for r in reports) - min(r["end"] for r in reports),
            "complete": sum(r["counts"].get("COMPLETE", 0) for r in reports)}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class _Connections:
    """Peak number of backends on the cell's PostgreSQL database (pg_stat_activity), sampled every 0.25 s."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.peak: int | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "_Connections":
        if self.url:
            from sqlalchemy import create_engine, text

            engine = create_engine(self.url, pool_size=1, max_overflow=0)
            query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND pid <> pg_backend_pid()")

            def sample() -> None:
                with engine.connect() as conn:
                    while not self._stop.wait(0.25):
                        n = conn.execute(query).scalar()
                        conn.rollback()  # pg_stat_activity is a snapshot per transaction
                        self.peak = max(self.peak or 0, int(n))
                engine.dispose()

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.url:
            self._thread.join()


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="*", default=None, help="worker counts (default 1 2 4; tiny 2)")
    p.add_argument("--storages", nargs="*", default=None, choices=("sqlite", "postgresql", "proxy", "journal"),
                   help="default: sqlite postgresql journal (tiny: sqlite journal); proxy = PostgreSQL behind "
                        "strategy-search storage-proxy")
    p.add_argument("--modes", "--objective", nargs="*", default=None, choices=MODES,
                   help="default: trivial real (tiny: trivial)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of one sleep trial (default 2)")
    p.add_argument("--trials", type=int, default=None, help="trials per cell, trivial objective (default 120)")
    p.add_argument("--real-trials", type=int, default=None, help="trials per cell, real trainer (default 24)")
    p.add_argument("--trials-per-worker", type=int, default=None, help="sleep objective (default 15, tiny 2)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per cell (default 3, tiny 1)")
    p.add_argument("--postgres-url", default=None, help="use this database instead of a throwaway server")
    p.add_argument("--ask-latency", type=int, nargs="*", default=None, metavar="N",
                   help="instead: one worker's lock+count+ask with N trials already in the study (e.g. 100 5000)")
    args = p.parse_args(argv)
    setup_threads(args.threads)  # workers inherit it through OMP_NUM_THREADS
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = args.workers or ([2] if args.tiny else [1, 2, 4])
    storages = args.storages or (["sqlite", "journal"] if args.tiny else ["sqlite", "postgresql", "journal"])
    modes = args.modes or (["trivial"] if args.tiny else ["trivial", "real"])
    per_worker = args.trials_per_worker or (2 if args.tiny else 15)
    per_mode = {"trivial": lambda w: args.trials or (4 if args.tiny else 120),
                "real": lambda w: args.real_trials or (4 if args.tiny else 24),
                "sleep": lambda w: per_worker * w}
    reps = args.reps or (1 if args.tiny else 3)
    info = machine()
    notes: dict[str, str] = {}
    cells: list[dict[str, Any]] = []

    if args.ask_latency:
        with tempfile.TemporaryDirectory(prefix="bench-ask-") as tmpdir, _postgres(storages, args, notes) as pg_url:
            latency = {}
            for storage in storages:
                url = {"sqlite": f"sqlite:///{tmpdir}/ask.db", "journal": f"journal:{tmpdir}/ask.log",
                       "postgresql": pg_url}.get(storage)
                if url:
                    print(storage, flush=True)
                    latency[storage] = ask_latency(url, f"ask-{storage}", sorted(args.ask_latency))
        path = write_result(args.out, "ask_latency", info, {"notes": notes, "latency": latency}, args.tiny)
        print(f"\nwrote {path}")
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmpdir, _postgres(storages, args, notes) as pg_url, \
            _proxy(pg_url if "proxy" in storages else None) as proxy_url:
        tmp = Path(tmpdir)
        active = [s for s in storages if (s != "postgresql" or pg_url) and (s != "proxy" or proxy_url)]
        plan = [(mode, storage, w) for mode in modes for storage in active for w in counts]
        for rep in range(reps):
            order = plan if rep % 2 == 0 else plan[::-1]
            for i, (mode, storage, w) in enumerate(order):
                study = f"scale-{mode}-{storage}-{w}-{rep}"
                url = {"sqlite": f"sqlite:///{tmp}/{study}.db", "journal": f"journal:{tmp}/{study}.log",
                       "postgresql": pg_url, "proxy": proxy_url}[storage]
                r = run_cell(url, study, mode, w, per_mode[mode](w), tmp, args.seconds,
                             count_url=pg_url if storage in ("postgresql", "proxy") else None)
                r.update({"mode": mode, "storage": storage, "workers": w, "rep": rep,
                          "exact_budget": r["complete"] == per_mode[mode](w)})
                cells.append(r)
                print(f"[{rep + 1}/{reps} {i + 1}/{len(plan)}] {mode:7s} {storage:10s} workers={w}: "
                      f"{r['trials']} trials in {r['seconds']:.1f}s = {r['trials_per_min']:.0f}/min, "
                      f"lock+ask {r['ask_median_ms']:.0f}/{r['ask_p95_ms']:.0f} ms, "
                      f"connections {r['connections']}", flush=True)

    rows = []
    for mode in modes:
        for storage in [s for s in storages if any(c["storage"] == s for c in cells)]:
            base = None
            for w in counts:
                mine = [c for c in cells if (c["mode"], c["storage"], c["workers"]) == (mode, storage, w)]
                tpm = median(c["trials_per_min"] for c in mine)
                base = base or tpm
                # Sleep trials: against the ideal (every worker always in a trial); else vs the fewest workers.
                ideal = w * 60.0 / args.seconds if mode == "sleep" else base * w / counts[0]
                rows.append({"mode": mode, "storage": storage, "workers": w, "trials_per_min": tpm, "ideal": ideal,
                             "ms_per_trial": 60000.0 / tpm, "speedup": tpm / base, "efficiency": tpm / ideal,
                             "contention": tpm / ideal < EFFICIENT,
                             "connections": max((c["connections"] or 0) for c in mine) if any(
                                 c["connections"] is not None for c in mine) else None,
                             "exact_budget": all(c["exact_budget"] for c in mine),
                             **{k: median(c[k] for c in mine) for k in
                                ("cores_busy", "ask_median_ms", "ask_p95_ms")}})
    print(f"\nWorker scaling (median of {reps}; efficiency = trials/min over the ideal: sleep trials "
          f"{args.seconds:g}s, else linear from {counts[0]} worker(s); contention when < {EFFICIENT};"
          f" {os.cpu_count()} CPU cores)")
    print(table(["objective", "storage", "workers", "trials/min", "ideal", "efficiency", "contention",
                 "cores busy", "lock+ask median ms", "p95 ms", "connections", "exact budget"],
                [(r["mode"], r["storage"], r["workers"], r["trials_per_min"], r["ideal"], r["efficiency"],
                  "yes" if r["contention"] else "", r["cores_busy"], r["ask_median_ms"], r["ask_p95_ms"],
                  "-" if r["connections"] is None else r["connections"], "yes" if r["exact_budget"] else "NO")
                 for r in rows]))
    print("lock+ask: one worker's time in the trial lock, the budget count and ask, per trial; connections: peak "
          "backends on the database during the cell (PostgreSQL, proxy: the proxy's)")
    for k, v in notes.items():
        print(f"note: {k}: {v}")
    path = write_result(args.out, "worker_scaling", info,
                        {"trials_per_cell": {m: per_mode[m](counts[0]) for m in modes}, "reps": reps,
                         "seconds": args.seconds, "notes": notes,
                         "spaces": {m: space_doc("<study>", m, per_mode[m](counts[0])) for m in modes},
                         "summary": rows, "cells": cells}, args.tiny)
    print(f"\nwrote {path}")
    return 0


def ask_latency(url: str, study_name: str, sizes: list[int], samples: int = 40) -> list[dict[str, Any]]:
    """One worker's "lock + budget count + ask" (``runner._next_trial``, then tell) with ``sizes``
    finished trials already in the study: it must stay flat as the study grows."""
    import optuna

    from search.space.parse import parse_space
    from search.study import runner
    from search.study.create import create_study
    from search.storage.heartbeat import StaleCheck
    from search.storage.resolved import StudyStorage
    from search.study.load import load_study
    from search.storage.backend import open_storage

    space = parse_space(space_doc(study_name, "trivial", 10**9), source="benchmark")
    create_study(space, open_storage(url))
    study, _ = load_study(study_name, url)
    where = StudyStorage.of(study, url)
    lock = where.lock()
    stale = StaleCheck(where)
    dist = {"lr": optuna.distributions.FloatDistribution(0.001, 0.05, log=True)}
    rows, have = [], 0
    for size in sizes:
        for i in range(have, size):
            study.add_trial(optuna.create_trial(params={"lr": 0.01}, distributions=dist, value=0.5,
                                                user_attrs={"config": {"lr": 0.01}, "history": [0.5] * 3}))
        have = size
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            trial = runner._next_trial(where, 10**9, lock, True, stale)
            times.append(1000.0 * (time.perf_counter() - t0))
            study.tell(trial, 0.5)
        have += samples
        times.sort()
        rows.append({"trials_in_study": size, "median_ms": _pct(times, 0.5), "p95_ms": _pct(times, 0.95)})
        print(f"ask latency with {size} trials: median {rows[-1]['median_ms']:.1f} ms, p95 {rows[-1]['p95_ms']:.1f} ms",
              flush=True)
    lock.close()
    return rows


@contextlib.contextmanager
def _proxy(pg_url: str | None) -> Iterator[str | None]:
    """``strategy-search storage-proxy`` in front of ``pg_url`` on a free loopback port."""
    if pg_url is None:
        yield None
        return
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = child_env(STRATEGY_SEARCH_STORAGE=pg_url)
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "-q", "storage-proxy", "--port", str(port)],
                            cwd=ROOT, env=env)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _postgres:
    """The PostgreSQL URL for the run: given, a throwaway server, or None (with a note why)."""

    def __init__(self, storages: list[str], args: Any, notes: dict[str, str]) -> None:
        self.wanted = "postgresql" in storages or "proxy" in storages
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
