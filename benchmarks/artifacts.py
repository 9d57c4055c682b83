"""What keeping a trial costs: writing its files and uploading them to the artifact store, and reading
the model back as ``export`` does, on a directory store and on an S3 protocol server (moto on
127.0.0.1, the tests' server: an in-memory server, so no network or disk of a real bucket).

Two models: the tiny CNN of the quickstart and a timm ResNet-18 (11 M parameters, 45 MB of
weights; random init, nothing downloaded). For each: the time of ``write_files`` (model core,
metrics.json, learning curve and confusion PNGs), of the six uploads, and of downloading and loading
the model core; process CPU seconds (single-threaded torch) and wall seconds, median over
repetitions, and the bytes stored. The trial's training time on the same machine is recorded beside
them so the cost reads as a share of a trial.

    python -m benchmarks.artifacts            # ~2 min on 2 cores
    python -m benchmarks.artifacts --tiny     # smoke run (what the tests use)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # also runnable as ``python benchmarks/artifacts.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from benchmarks._common import machine, median, parser, setup_threads, table, write_result
from search.artifacts.bundle import CORE_FILES, bundle_from_result, load_core
from search.artifacts.store import open_store
from search.artifacts.trial_files import TrialFiles, model_identity, upload_files, write_files
from search.core.locations import parse_location
from search.space.parse import parse_space
from search.storage import internals
from search.train.loop import resolve_device, train_space


def _clock(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(process CPU seconds, wall seconds, result) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def _models(tiny: bool) -> list[tuple[str, dict[str, Any]]]:
    small = ("cnn width 8 depth 2 (digits 8x8)", {"width": 8, "depth": 2, "lr": 0.01, "epochs": 2})
    if tiny:
        return [small]
    return [small, ("resnet18, random init (digits at 32x32)",
                    {"backbone": "resnet18", "pretrained": False, "input_size": 32, "lr": 0.001, "epochs": 1})]


def _stores(tiny: bool, root: Path) -> tuple[list[tuple[str, Any]], Any]:
    """(name, store) pairs: a directory, and unless ``tiny`` a bucket on a moto server (returned to stop)."""
    stores: list[tuple[str, Any]] = [("directory", open_store(parse_location(str(root / "store")), create=True))]
    if tiny:
        return stores, None
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import S3Server, client_env

    server = S3Server.start()
    os.environ.update(client_env(server.endpoint))
    server.client().create_bucket(Bucket="bench")
    stores.append(("s3 (moto, 127.0.0.1)", open_store(parse_location("s3://bench/runs"))))
    return stores, server


def run(tiny: bool, reps: int, root: Path) -> dict[str, Any]:
    rows = []
    stores, server = _stores(tiny, root)
    try:
        for label, params in _models(tiny):
            space = parse_space({"study": "bench", "dataset": {"name": "digits", "limit": 300},
                                 "budget": {"n_trials": 1, "max_epochs": params["epochs"]}, "params": params})
            config = space.sample(None)
            config.seed = 0
            train_cpu, train_wall, result = _clock(lambda: train_space(config, space, device=resolve_device("cpu")))
            study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
            for name, store in stores:
                for rep in range(reps):
                    trial = study.ask()
                    source = model_identity(study, trial.number, config.to_dict())
                    bundle = bundle_from_result(result, config, space.dataset, space.objectives, source)
                    history = [h.to_dict() for h in result.history]
                    with tempfile.TemporaryDirectory() as tmp:
                        w_cpu, w_wall, paths = _clock(lambda: write_files(bundle, history, Path(tmp), "accuracy"))
                        size = sum(p.stat().st_size for p in paths)
                        weights = paths[-1].stat().st_size  # the weights: uploaded last
                        u_cpu, u_wall, _ = _clock(lambda: upload_files(store, trial, lambda _: paths))
                    study.tell(trial, 0.5)
                    frozen = study.trials[trial.number]
                    files = TrialFiles(store, internals.storage_of(study), internals.study_id(study))
                    with tempfile.TemporaryDirectory() as tmp:
                        r_cpu, r_wall, _ = _clock(lambda: load_core(files.download(frozen, CORE_FILES,
                                                                                   Path(tmp))[0].parent))
                    rows.append({"model": label, "store": name, "rep": rep, "bytes": size,
                                 "weights_bytes": weights,
                                 "write_cpu_s": w_cpu, "write_wall_s": w_wall, "upload_cpu_s": u_cpu,
                                 "upload_wall_s": u_wall, "read_cpu_s": r_cpu, "read_wall_s": r_wall,
                                 "train_cpu_s": train_cpu, "train_wall_s": train_wall,
                                 "n_params": result.n_params})
    finally:
        if server is not None:
            server.stop()
    summary = []
    for key in dict.fromkeys((r["model"], r["store"]) for r in rows):
        cell = [r for r in rows if (r["model"], r["store"]) == key]
        keep_cpu = median(r["write_cpu_s"] + r["upload_cpu_s"] for r in cell)
        summary.append({"model": key[0], "store": key[1], "n_params": cell[0]["n_params"],
                        "mb_stored": round(cell[0]["bytes"] / 1e6, 2),
                        "write_cpu_s": median(r["write_cpu_s"] for r in cell),
                        "upload_cpu_s": median(r["upload_cpu_s"] for r in cell),
                        "upload_wall_s": median(r["upload_wall_s"] for r in cell),
                        "keep_cpu_s": keep_cpu, "keep_wall_s": median(r["write_wall_s"] + r["upload_wall_s"]
                                                                      for r in cell),
                        "read_wall_s": median(r["read_wall_s"] for r in cell),
                        "train_cpu_s": cell[0]["train_cpu_s"],
                        "keep_share_of_trial_cpu": keep_cpu / cell[0]["train_cpu_s"]})
    return {"reps": reps, "rows": rows, "summary": summary}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    setup_threads(args.threads)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        payload = run(args.tiny, 2 if args.tiny else args.reps, Path(tmp))
    print("Keeping a trial: write its files, upload them, read the model back (medians)")
    print(table(["model", "store", "MB", "write CPU s", "upload CPU s", "upload wall s", "keep CPU s",
                 "read wall s", "trial CPU s", "keep / trial CPU"],
                [(r["model"], r["store"], r["mb_stored"], r["write_cpu_s"], r["upload_cpu_s"], r["upload_wall_s"],
                  r["keep_cpu_s"], r["read_wall_s"], r["train_cpu_s"], r["keep_share_of_trial_cpu"])
                 for r in payload["summary"]]))
    path = write_result(args.out, "artifacts", info, payload, args.tiny)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
