"""Data at scale: the persistent memory-mapped dataset cache on N photo-like JPEGs.

Generates N 320x240 JPEGs in 15 classes (default 100,000; ``--n`` for fewer) and measures, in one run:

- first build (``strategy-search cache DATA --input-size 64``, a process pool over all cores) vs the
  old path's single-process decode (PIL decode + thumbnail + torch resize per image, as before the
  cache; timed on a sample of ``--old-sample`` files and extrapolated to N when N is larger);
- second start: from launching ``strategy-search run`` (cache present) to its first training step;
- memory: peak RSS of one ``run`` trial on N vs an empty trial (digits, 200 images), and the
  Rss / Pss / USS (``/proc/PID/smaps_rollup``, sampled every 0.25 s) of 4 ``worker`` processes
  training on one study at once;
- epoch throughput (training images/s of the library's ``train()``) from the map vs in-RAM tensors,
  and from the map with its pages dropped from the process and the page cache before every batch
  (``madvise``/``posix_fadvise`` DONTNEED: every batch is read from disk, a page cache of ~0, the
  limit of "larger than RAM" without needing a cgroup);
- with CUDA: the same arms trained on the GPU (bf16, a bigger model) beside the GPU-resident set;
- raw sequential read MB/s of the cache file, cold (after DONTNEED) and warm.

    python -m benchmarks.data_scale            # 100,000 images: long, needs ~3 GB of disk
    python -m benchmarks.data_scale --n 20000
    python -m benchmarks.data_scale --tiny
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import ROOT, child_env, machine, median, parser, setup_threads, table, write_result

CLASSES = 15
W, H = 320, 240
INPUT = 64

FIRST_STEP = """
import os, sys, time
t_launch = float(sys.argv[1])
import search.train.loop as loop
orig = loop.iterate_batches
def first(*a, **k):
    it = orig(*a, **k)
    next(it)
    print(f"FIRST_STEP {time.time() - t_launch:.3f}", flush=True)
    os._exit(0)
loop.iterate_batches = first
from search.cli import main
main(sys.argv[2:])
"""


# ----------------------------------------------------------------------------- data


def _make(job: tuple[str, int, int]) -> int:
    """One photo-like JPEG: a smooth color field, a class-colored blob, sensor noise."""
    from PIL import Image, ImageDraw

    path, label, seed = job
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)).resize((W, H), Image.BILINEAR)
    draw = ImageDraw.Draw(field)
    hue = np.array([(label * 67) % 256, (label * 139) % 256, (label * 29 + 80) % 256])
    x, y, r = rng.integers(40, W - 40), rng.integers(40, H - 40), rng.integers(20, 60)
    draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=tuple(int(v) for v in hue))
    arr = np.asarray(field, dtype=np.int16) + rng.integers(-12, 12, (H, W, 3), dtype=np.int16)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=85)
    return os.path.getsize(path)


def generate(root: Path, n: int) -> dict[str, Any]:
    jobs = []
    for c in range(CLASSES):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        jobs.append((str(root / f"class{i % CLASSES:02d}" / f"{i:07d}.jpg"), i % CLASSES, i))
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        nbytes = sum(pool.map(_make, jobs, chunksize=256))
    return {"images": n, "seconds": time.perf_counter() - start, "bytes_on_disk": nbytes}


def old_decode(files: list[str], limit: int) -> dict[str, Any]:
    """The pre-cache path, single process: PIL decode, thumbnail to 256, tensor, torch resize to 64."""
    import torch
    from PIL import Image

    from search.data.transforms import resize_all

    sample = files[:: max(1, len(files) // limit)][:limit]
    start = time.perf_counter()
    imgs = []
    for f in sample:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            imgs.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous())
    resize_all(imgs, INPUT, "stretch")
    secs = time.perf_counter() - start
    rate = len(sample) / secs
    return {"sampled": len(sample), "seconds_sample": secs, "images_per_s": rate,
            "seconds_for_n": len(files) / rate, "extrapolated": len(sample) < len(files)}


# ----------------------------------------------------------------------------- processes


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *args]


def _env(cache: Path) -> dict[str, str]:
    return child_env(STRATEGY_SEARCH_CACHE=str(cache), OMP_NUM_THREADS="1", STRATEGY_SEARCH_PROGRESS="0")


def run_measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds, exit code, output and peak RSS (MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"seconds": time.perf_counter() - start, "output": out, "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def write_space(path: Path, study: str, dataset: dict[str, Any], size: int | None) -> Path:
    import yaml

    params: dict[str, Any] = {"width": 8, "depth": 2, "batch_size": 128, "lr": 0.003, "epochs": 1}
    if size:
        params["input_size"] = size
    doc = {"study": study, "dataset": dataset, "budget": {"n_trials": 1, "max_epochs": 1}, "sampler": "random",
           "pruner": "none", "seed": 0, "params": params}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def second_start(space: Path, work: Path, env: dict[str, str], repeats: int) -> list[float]:
    """Seconds from launching ``run`` to its first training step (each on a fresh study database)."""
    out = []
    for i in range(repeats):
        storage = f"sqlite:///{work}/start{i}.db"
        t = time.time()
        proc = subprocess.run([sys.executable, "-c", FIRST_STEP, str(t), "run", str(space), "--storage", storage,
                               "--device", "cpu"], env=env, capture_output=True, text=True, cwd=ROOT)
        line = [x for x in proc.stdout.splitlines() if x.startswith("FIRST_STEP")]
        if not line:
            raise RuntimeError(f"no first step:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        out.append(float(line[0].split()[1]))
    return out


def _rollup(pid: int) -> dict[str, float]:
    vals: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, rest = line.split(":", 1)
            vals[key] = float(rest.split()[0]) / 1024  # MB
    except (OSError, ValueError):
        return {}
    return {"rss": vals.get("Rss", 0.0), "pss": vals.get("Pss", 0.0),
            "uss": vals.get("Private_Clean", 0.0) + vals.get("Private_Dirty", 0.0),
            "anonymous": vals.get("Anonymous", 0.0), "file_shared": vals.get("Shared_Clean", 0.0)}


def four_workers(space: Path, storage: str, env: dict[str, str], n: int = 4) -> dict[str, Any]:
    """``create`` once, then ``n`` workers with one trial each; peak smaps_rollup figures per worker."""
    import yaml

    doc = yaml.safe_load(space.read_text())
    doc["budget"]["n_trials"] = n
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run(_cli("create", str(space), "--storage", storage), env=env, check=True, capture_output=True,
                   cwd=ROOT)
    start = time.perf_counter()
    procs = [subprocess.Popen(_cli("worker", doc["study"], "--storage", storage, "--n-trials", "1", "--device",
                                   "cpu"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(n)]
    peaks: list[dict[str, float]] = [{} for _ in procs]
    total_pss = total_uss = 0.0
    while any(p.poll() is None for p in procs):
        now_pss = now_uss = 0.0
        for p, peak in zip(procs, peaks):
            r = _rollup(p.pid)
            for k, v in r.items():
                peak[k] = max(peak.get(k, 0.0), v)
            now_pss += r.get("pss", 0.0)
            now_uss += r.get("uss", 0.0)
        total_pss, total_uss = max(total_pss, now_pss), max(total_uss, now_uss)
        time.sleep(0.25)
    errors = [p.stderr.read()[-1500:] for p in procs if p.returncode != 0 and p.stderr]
    if errors:
        raise RuntimeError("worker failed:\n" + errors[0])
    return {"workers": n, "seconds": time.perf_counter() - start, "per_worker_peak_mb": peaks,
            "sum_pss_peak_mb": total_pss, "sum_uss_peak_mb": total_uss}


# ----------------------------------------------------------------------------- in-process measurements


def throughput(data_dir: Path, cache_file: Path, n_limit: int, epochs: int) -> dict[str, Any]:
    """Training images/s of train(): mapped, in-RAM tensors, and mapped with pages dropped every batch."""
    import torch

    from search.core.config import TrialConfig
    from search.data.datasets import MappedImages, Prepared, prepare
    from search.space.parse import DatasetSpec

    spec = DatasetSpec(path=str(data_dir), limit=n_limit)
    config = TrialConfig(width=8, depth=2, batch_size=128, lr=0.003, epochs=epochs, input_size=INPUT, seed=0)
    mapped = prepare(spec, INPUT, "stretch", torch.device("cpu"))
    assert isinstance(mapped.train_x, MappedImages)
    in_ram = Prepared(mapped.train_x.materialize(), mapped.train_y, mapped.val_x.materialize(), mapped.val_y,
                      mapped.test_x.materialize(), mapped.test_y, mapped.classes, mapped.size)
    # The same file mapped again, holding the np.memmap whose pages the cold arm drops.
    mm = np.load(cache_file, mmap_mode="c")
    cold = Prepared(ColdMapped(torch.from_numpy(mm), mapped.train_x.index, mm), mapped.train_y, mapped.val_x, mapped.val_y,
                    mapped.test_x, mapped.test_y, mapped.classes, mapped.size)
    n_train = len(mapped.train_y)
    arms = (("map", mapped), ("in-RAM tensor", in_ram), ("map, pages dropped every batch", cold))
    out, rates = _interleaved(config, spec, arms, torch.device("cpu"))
    result = {"n_train": n_train, "epochs_per_arm": 2 * epochs, "images_per_s": out, "raw": rates,
              "map_vs_ram": out["map"] / out["in-RAM tensor"],
              "cold_vs_ram": out["map, pages dropped every batch"] / out["in-RAM tensor"]}
    if torch.cuda.is_available():
        result["cuda"] = accelerator_throughput(spec, mapped, in_ram, cold, epochs, torch.device("cuda"))
    return result


def _interleaved(config: Any, spec: Any, arms: Any, device: Any, rounds: int = 2
                 ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median training images/s of ``train()`` per (name, data) arm, the arms alternating for
    ``rounds`` rounds; and every epoch's rate."""
    from search.train.loop import train

    rates: dict[str, list[float]] = {name: [] for name, _ in arms}
    for _ in range(rounds):
        for name, data in arms:
            res = train(config, spec, device=device, data=data, evaluate_test=False)
            rates[name] += [len(data.train_y) / h.seconds for h in res.history]
    return {name: median(v) for name, v in rates.items()}, rates


def accelerator_throughput(spec: Any, mapped: Any, in_ram: Any, cold: Any, epochs: int, dev: Any) -> dict[str, Any]:
    """The same arms trained on ``dev`` (CUDA (bf16, channels_last), plus the GPU-resident set.

    A bigger model than the CPU arms (width 32, depth 3, batch 256) so that a step is GPU work and
    not only launch overhead; the map arm goes through the prefetch thread (gather, pin, async copy).
    """
    import torch

    from search.core.config import TrialConfig
    from search.data.datasets import Prepared
    from search.train.loop import train

    config = TrialConfig(width=32, depth=3, batch_size=256, lr=0.003, epochs=epochs, input_size=INPUT, seed=0)
    resident = Prepared(*(t.to(dev) for t in (in_ram.train_x, in_ram.train_y, in_ram.val_x, in_ram.val_y,
                                               in_ram.test_x, in_ram.test_y)), in_ram.classes, in_ram.size)
    arms = (("GPU-resident", resident), ("map, prefetch thread + pinned copy", mapped),
            ("in-RAM host tensor, copied per batch", in_ram), ("map, pages dropped every batch", cold))
    train(config, spec, device=dev, data=resident, evaluate_test=False)  # warm-up: cuDNN autotune, allocator
    out, rates = _interleaved(config, spec, arms, dev)
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    return {"device": card, "model": {"width": 32, "depth": 3, "batch_size": 256},
            "images_per_s": out, "raw": rates,
            "map_vs_resident": out["map, prefetch thread + pinned copy"] / out["GPU-resident"]}


def _drop(arr: np.ndarray) -> None:
    """Unmap the process's pages of ``arr`` and evict the file from the page cache."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None:
        mm.madvise(mmap.MADV_DONTNEED)
    fname = getattr(arr, "filename", None)
    if fname:
        fd = os.open(fname, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _make_cold_class() -> type:
    from search.data.datasets import MappedImages

    class Cold(MappedImages):
        """Every gather starts with the map's pages gone: each batch comes from the disk."""

        def __init__(self, base: Any, index: Any, mm: np.memmap) -> None:
            super().__init__(base, index)
            self.__dict__["mm"] = mm

        def __getitem__(self, key: Any) -> Any:
            _drop(self.__dict__["mm"])
            return super().__getitem__(key)

    return Cold


def ColdMapped(base: Any, index: Any, mm: np.memmap) -> Any:  # noqa: N802 - a class built lazily (torch import)
    return _make_cold_class()(base, index, mm)


def raw_read(path: Path) -> dict[str, float]:
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        out = {}
        for name in ("cold_mb_per_s", "warm_mb_per_s"):
            start = time.perf_counter()
            pos = 0
            while chunk := os.pread(fd, 1 << 24, pos):
                pos += len(chunk)
            out[name] = size / 1e6 / (time.perf_counter() - start)
    finally:
        os.close(fd)
    out["file_mb"] = size / 1e6
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="images to generate (default 100000; --tiny 300)")
    p.add_argument("--old-sample", type=int, default=1000, help="files the old path decodes (then extrapolated)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the generated images here and reuse them on the next run (default: a temporary "
                        "folder, deleted at the end); the cache and databases are always fresh")
    p.add_argument("--workers", type=int, default=None, help="workers on one study (default 4; --tiny 2)")
    p.add_argument("--throughput-limit", type=int, default=20000, help="images used for the epoch throughput arms")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    n = args.n or (300 if args.tiny else 100_000)
    info = machine()
    result: dict[str, Any] = {"n": n, "image_size": [W, H], "classes": CLASSES, "input_size": INPUT}
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        data = (args.workdir / f"images-{n}") if args.workdir else work / "images"
        cache, storage = work / "cache", f"sqlite:///{work}/studies.db"
        env = _env(cache)
        done = data / "complete.json"
        if done.exists():
            result["generate"] = json.loads(done.read_text())
            print(f"reusing the {n} images in {data}")
        else:
            result["generate"] = generate(data, n)
            done.write_text(json.dumps(result["generate"]))
        g = result["generate"]
        print(f"generated {n} JPEGs {W}x{H} ({g['bytes_on_disk'] / 1e6:.0f} MB) in {g['seconds']:.1f}s")
        files = sorted(str(f) for f in data.rglob("*.jpg"))
        result["old_decode"] = old_decode(files, min(n, 200 if args.tiny else args.old_sample))

        build = run_measured(_cli("cache", str(data), "--input-size", str(INPUT), "--json"), env)
        row = json.loads(build["output"][build["output"].index("["):])[0]
        cores = os.cpu_count() or 1
        result["build"] = {"seconds": build["seconds"], "cores": cores, "images_per_s": n / build["seconds"],
                           "images_per_s_per_core": n / build["seconds"] / cores, "cpu_seconds": build["cpu_seconds"],
                           "cache_mb": row["bytes"] / 1e6, "state": row["state"], "path": row["path"]}
        b, o = result["build"], result["old_decode"]
        print(f"first build {b['seconds']:.1f}s on {cores} cores ({b['images_per_s_per_core']:.0f} images/s per core)"
              f"; old single-process decode {o['seconds_for_n']:.1f}s"
              f"{' (extrapolated from %d files)' % o['sampled'] if o['extrapolated'] else ''}")

        space = write_space(work / "scale.yaml", "scale", {"path": str(data)}, INPUT)
        result["second_start_s"] = second_start(space, work, env, 2 if args.tiny else 3)
        print(f"second start (command to first training step): {median(result['second_start_s']):.2f}s")

        empty = write_space(work / "empty.yaml", "empty", {"name": "digits", "limit": 200}, None)
        result["empty_trial"] = {k: v for k, v in run_measured(
            _cli("run", str(empty), "--storage", storage, "--device", "cpu"), env).items() if k != "output"}
        one = run_measured(_cli("run", str(space), "--storage", storage, "--device", "cpu"), env)
        result["one_trial"] = {k: v for k, v in one.items() if k != "output"}
        result["one_trial"]["above_empty_mb"] = one["peak_rss_mb"] - result["empty_trial"]["peak_rss_mb"]
        print(f"peak RSS: one trial on {n} images {one['peak_rss_mb']:.0f} MB, empty trial "
              f"{result['empty_trial']['peak_rss_mb']:.0f} MB (+{result['one_trial']['above_empty_mb']:.0f} MB)")
        four = write_space(work / "four.yaml", "four", {"path": str(data)}, INPUT)
        result["four_workers"] = four_workers(four, storage, env, args.workers or (2 if args.tiny else 4))
        fw = result["four_workers"]
        print(f"{fw['workers']} workers: sum of Pss {fw['sum_pss_peak_mb']:.0f} MB, sum of USS {fw['sum_uss_peak_mb']:.0f} MB "
              f"({fw['seconds']:.0f}s)")

        os.environ["STRATEGY_SEARCH_CACHE"] = str(cache)
        result["throughput"] = throughput(data, Path(row["path"]), min(n, args.throughput_limit), 1)
        result["raw_read"] = raw_read(Path(row["path"]))

    t, r = result["throughput"], result["raw_read"]
    rows = [
        ("images", n, f"{W}x{H} JPEG, {result['generate']['bytes_on_disk'] / 1e6:.0f} MB"),
        ("old path: single-process decode (s)", o["seconds_for_n"],
         f"{o['images_per_s']:.0f} images/s" + (f", extrapolated from {o['sampled']}" if o["extrapolated"] else "")),
        ("first build (s)", b["seconds"], f"{cores} cores, {b['images_per_s_per_core']:.0f} images/s per core"),
        ("build speed-up vs old path", o["seconds_for_n"] / b["seconds"], ""),
        ("cache file (MB)", b["cache_mb"], f"uint8 {INPUT}x{INPUT}"),
        ("second start: command to first step (s)", median(result["second_start_s"]), "goal < 5 s at 100k"),
        ("peak RSS, one trial (MB)", result["one_trial"]["peak_rss_mb"], ""),
        ("peak RSS, empty trial (MB)", result["empty_trial"]["peak_rss_mb"], "digits, 200 images"),
        ("one trial above empty (MB)", result["one_trial"]["above_empty_mb"], "goal <= 1500"),
        (f"{fw['workers']} workers: peak sum of Pss (MB)", fw["sum_pss_peak_mb"], "shared map counted once"),
        (f"{fw['workers']} workers: peak sum of USS (MB)", fw["sum_uss_peak_mb"], "private memory"),
        (f"{fw['workers']} workers: max Rss of one (MB)", max(w.get("rss", 0) for w in fw["per_worker_peak_mb"]), ""),
        ("train images/s, in-RAM tensor", t["images_per_s"]["in-RAM tensor"], f"{t['n_train']} training images"),
        ("train images/s, map", t["images_per_s"]["map"], f"{t['map_vs_ram']:.3f} x in-RAM (goal >= 0.9)"),
        ("train images/s, map with pages dropped every batch", t["images_per_s"]["map, pages dropped every batch"],
         f"{t['cold_vs_ram']:.3f} x in-RAM"),
        *[(f"CUDA train images/s, {name}", v, t["cuda"]["device"]) for name, v in t.get("cuda", {}).get(
            "images_per_s", {}).items()],
        ("raw sequential read, cold (MB/s)", r["cold_mb_per_s"], f"{r['file_mb']:.0f} MB file"),
        ("raw sequential read, warm (MB/s)", r["warm_mb_per_s"], "page cache"),
    ]
    print("\nDataset cache at scale")
    print(table(["measure", "value", "note"], rows))
    path = write_result(args.out, "data_scale", info, result, args.tiny)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
