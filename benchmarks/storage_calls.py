"""How often a worker and ``export`` work out what a study's storage is: calls counted, per trial and once.

A worker that re-derives its study's storage (the RDB backend behind Optuna's cache, whether it is
a proxy, its heartbeat interval, the URL its lock keys on) on every trial does work that grows with
the trials and spreads one decision over many modules (issue 22, item 2). This counts, in one
process, the calls of the functions that derive those (wrapped wherever they are imported) while
``strategy-search worker`` runs a new study of N trials, for two values of N, and while ``export``
writes the best trial's bundle; the difference between the two worker runs, divided by the
difference in trials, is the per-trial count. Exact and independent of load: it counts calls, it
times nothing. Functions a version does not have are skipped, so the same script measures the
code before the change (run it with that checkout's PYTHONPATH).

    python -m benchmarks.storage_calls                     # SQLite, PostgreSQL (throwaway), the proxy
    python -m benchmarks.storage_calls --postgres-url URL --tag before
    python -m benchmarks.storage_calls --tiny
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import child_env, machine, parser, setup_threads, table, write_result

# (module, function): what the storage is (kind, backend, URL, heartbeat), the artifact store's URL,
# and export's choice of trial. Old names are listed too (interval_of, grace_of, ...): the code
# before the change derived these per call.
COUNTED = [
    ("search.storage.internals", "storage_of"),
    ("search.storage.backend", "rdb_backend"),
    ("search.storage.backend", "is_proxy"),
    ("search.storage.backend", "resolve_url"),
    ("search.storage.backend", "heartbeat_settings"),
    ("search.storage.backend", "mask_url"),
    ("search.storage.heartbeat", "interval_of"),
    ("search.storage.heartbeat", "grace_of"),
    ("search.storage.heartbeat", "checks_stale_here"),
    ("search.storage.budget", "counts_in_transaction"),
    ("search.storage.resolved", "StudyStorage.of"),
    ("search.core.locations", "parse_location"),
    ("search.artifacts.store", "open_store"),
    ("search.artifacts.store", "label"),
    ("search.tools.summary", "chosen_config"),
]
# Loaded before wrapping, so every module that imports a counted function by name is patched too.
LOADED = ["search.cli", "search.study.runner", "search.study.workers", "search.tools.export",
          "search.storage.proxy", "search.study.artifact_store", "search.artifacts.trial_files"]


def count_calls(counts: collections.Counter[str], module: Any, name: str,
                patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Count calls of ``module.name`` (``Class.method`` for a classmethod) in ``counts[name]``: the
    function is replaced in ``module`` and in every loaded module of ours that imported it by name.
    ``patch(owner, attr, value)`` does the replacing (pytest's ``monkeypatch.setattr`` undoes it)."""
    owner_name, _, method = name.rpartition(".")
    if owner_name:  # a classmethod: replaced on its class
        owner = getattr(module, owner_name)
        original = owner.__dict__[method].__func__

        def counted_method(cls: type, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(cls, *args, **kwargs)

        patch(owner, method, classmethod(counted_method))
        return
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return original(*args, **kwargs)

    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith(("search", "benchmarks")):
            for attr, value in list(vars(loaded).items()):
                if value is original:
                    patch(loaded, attr, counted)


def install(counts: collections.Counter[str]) -> list[str]:
    """Wrap every counted function this version has; the names wrapped."""
    for name in LOADED:
        importlib.import_module(name)
    wrapped = []
    for module_name, name in COUNTED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name.split(".")[0]):
            count_calls(counts, module, name)
            wrapped.append(f"{module_name}.{name}")
    return wrapped


@contextlib.contextmanager
def _proxy(db: str, work: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "-q", "storage-proxy", "--storage", db, "--port",
                             str(port)], cwd=work, env=child_env())
    try:
        from search.storage.backend import open_storage

        open_storage(f"grpc://127.0.0.1:{port}", connect_timeout=60)  # waits until it answers
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(url: str, n_trials: int, work: Path, counts: collections.Counter[str]) -> dict[str, dict[str, int]]:
    """``create``, ``worker`` and ``export`` of a new study of ``n_trials`` on ``url``: the calls
    the worker and the export made."""
    from click.testing import CliRunner

    from search.cli import main

    def cli(*args: str) -> None:
        result = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    import yaml

    name = f"calls-{os.getpid()}-{n_trials}-{len(list(work.iterdir()))}"
    doc = {"study": name, "objective": "accuracy", "dataset": {"name": "digits", "limit": 120},
           "budget": {"n_trials": n_trials, "max_epochs": 1}, "sampler": "random", "pruner": "none", "seed": 0,
           "keep": "top_k", "keep_top_k": 2,
           "params": {"lr": {"float": [0.001, 0.05], "log": True}, "batch_size": 32, "width": 4, "depth": 2}}
    space = work / f"{name}.yaml"
    space.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    store = str(work / "store")
    cli("create", str(space), "--storage", url)
    counts.clear()
    cli("worker", name, "--storage", url, "--artifacts", store, "--device", "cpu")
    worker = dict(counts)
    counts.clear()
    cli("export", name, "--storage", url, "--artifacts", store, "-o", str(work / f"{name}-best"), "--no-onnx")
    return {"worker": worker, "export": dict(counts)}


def per_trial(few: dict[str, int], many: dict[str, int], trials: tuple[int, int]) -> dict[str, float]:
    """Calls per trial: the growth from ``few`` to ``many`` trials (only the functions that grow)."""
    span = trials[1] - trials[0]
    names = sorted(set(few) | set(many))
    return {n: (many.get(n, 0) - few.get(n, 0)) / span for n in names if many.get(n, 0) != few.get(n, 0)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--kinds", default="sqlite,postgresql,proxy", help="storages to measure")
    p.add_argument("--trials", default="2,6", help="the two study sizes (trials)")
    p.add_argument("--postgres-url", default=os.environ.get("STRATEGY_SEARCH_PG_URL"),
                   help="PostgreSQL to use (default: $STRATEGY_SEARCH_PG_URL, else a throwaway server)")
    p.add_argument("--tag", default="", help="suffix of the result's name (e.g. before)")
    p.add_argument("--code", default=None, help="the code measured, when not this checkout's HEAD (e.g. a commit)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    kinds = ["sqlite"] if args.tiny else args.kinds.split(",")
    sizes = (1, 2) if args.tiny else tuple(int(n) for n in args.trials.split(","))
    info = machine()
    counts: collections.Counter[str] = collections.Counter()
    wrapped = install(counts)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        pg = args.postgres_url
        if pg is None and {"postgresql"} & set(kinds):
            from benchmarks._postgres import throwaway_postgres

            pg = stack.enter_context(throwaway_postgres())
        for kind in kinds:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-calls-{kind}-")))
            if kind == "postgresql":
                url = pg
            elif kind == "proxy":
                url = stack.enter_context(_proxy(f"sqlite:///{work}/behind-proxy.db", work))
            else:
                url = f"sqlite:///{work}/studies.db"
            runs = {n: measure(url, n, work, counts) for n in sizes}
            few, many = runs[sizes[0]], runs[sizes[-1]]
            growth = per_trial(few["worker"], many["worker"], (sizes[0], sizes[-1]))
            results[kind] = {"runs": {str(n): r for n, r in runs.items()}, "worker_per_trial": growth,
                             "worker_per_trial_total": sum(v for k, v in growth.items() if k != "label"),
                             "export": many["export"]}
    rows = [[kind, f"{r['worker_per_trial_total']:g}", ", ".join(f"{k} {v:g}" for k, v in r["worker_per_trial"].items()),
             str(r["export"].get("chosen_config", 0))] for kind, r in results.items()]
    print(table(["storage", "derivations per trial", "per function", "export: chosen_config"], rows))
    payload = {"code": args.code or info["git_commit"], "trials": list(sizes), "wrapped": wrapped, "results": results,
               "note": "worker_per_trial_total: calls per trial of the functions that derive the study's storage "
                       "(the artifact store's label, once per kept trial's upload, is listed apart)"}
    path = write_result(args.out, "storage_calls" + (f"-{args.tag}" if args.tag else ""), info, payload, args.tiny)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
