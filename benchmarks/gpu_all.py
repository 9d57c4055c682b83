"""Every GPU figure of issue 28 in one run: ``python -m benchmarks.gpu --all`` (one JSON, < 8 minutes).

Sections (each timed; one that would overrun the time budget is recorded as skipped):

1. ``overhead_32px``: epoch time of the library's ``train()`` against a bare loop doing the same
   necessary work (shuffled gather on the device, the same normalization module, bf16 autocast,
   channels_last, AdamW), SmallCNN w64 d3 residual and timm resnet18 at 32 px (50,000 generated
   images, 60% training). What differs: the library also keeps its per-step statistics (4 small
   ops), the schedule step, the epoch's validation and its fused optimizer kernel. Goal: library /
   bare >= 0.95 (images/s).
2. ``kernel_profile``: ``torch.profiler`` over one 40-step epoch of each (the library's includes
   its set-up and a one-batch validation): kernels per step and the share of the wall time the GPU
   is busy (the gaps are launch overhead and host work).
3. ``augmentation``: ``train()`` images/s with ``augment`` none / light / standard and a learned
   policy (AutoAugment, CIFAR-10 policy) on the GPU-resident set. Goal: light >= 0.85x none.
4. ``photos_224``: timm resnet50 (random init), 224 px, bf16 + channels_last: the raw cache
   memory-mapped and fed through the prefetch thread, vs. the same images resident on the GPU,
   vs. the JPEG cache decoded on the GPU (nvJPEG); plus ``compile: true``. Goal: map >= 0.95x
   resident.
5. ``jpeg_decode``: nvJPEG (``decode_jpeg`` on a list, ``device="cuda"``) vs. the CPU, images/s.
6. ``workers_per_gpu``: that resnet50 trial probed with 1, 2, 4 (and 8 when memory allows)
   workers at once (``search.study.probe``, as ``worker --per-gpu auto`` does), the count
   ``--per-gpu auto`` picks and its throughput against the best fixed count. Goal: within 10%.

Without CUDA (or with ``--tiny``) the same code runs a seconds-long smoke on the CPU at tiny
sizes; its JSON says the GPU figures are pending and its numbers mean nothing.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

PENDING = "not yet measured on a GPU: this run was a CPU smoke of the script (its numbers mean nothing)"
BUDGET_S = 450.0  # stop starting sections after this (the whole run must stay under 8 minutes)
GOALS = {"overhead_32px": 0.95, "light_vs_none": 0.85, "map_vs_resident": 0.95, "auto_vs_best": 0.90}

log = logging.getLogger("benchmarks.gpu_all")


class Clock:
    def __init__(self, budget: float) -> None:
        self.start = time.perf_counter()
        self.budget = budget

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, seconds: float) -> bool:
        return self.elapsed + seconds <= self.budget


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(result: Any, n_train: int, batch: int, compiled: bool = False) -> float:
    """Training images/s of the last epoch (the first is the warm-up)."""
    images = (n_train // batch) * batch if compiled else n_train
    return images / result.history[-1].seconds


# ----------------------------------------------------------------------------- 1-2: overhead at 32 px


def bare_loop(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, pre: nn.Module, batch: int,
              device: torch.device, steps: int | None = None, epochs: int = 2) -> list[float]:
    """The hand-written loop: shuffled gather on the device, normalization, bf16 + channels_last on
    CUDA, AdamW (foreach, PyTorch's default), seconds per epoch (synchronized)."""
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    n = len(y_all)
    times = []
    model.train()
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        order = torch.randperm(n, device=x_all.device)
        for k, i in enumerate(range(0, n - 1, batch)):
            if steps is not None and k >= steps:
                break
            idx = order[i : i + batch]
            x = pre(x_all[idx])
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = nn.functional.cross_entropy(model(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def overhead(spec: Any, models: dict[str, dict[str, Any]], batch: int, device: torch.device, reps: int = 2
             ) -> list[dict[str, Any]]:
    from search.core.config import TrialConfig
    from search.data.color import make_preprocess
    from search.data.datasets import prepare
    from search.models.factory import create_model
    from search.train.loop import train

    data = prepare(spec, None, "stretch", device)
    x_all, y_all = data.train_x, data.train_y
    if not isinstance(x_all, torch.Tensor):
        x_all = x_all.materialize()
    n = len(y_all)
    rows = []
    for name, arch in models.items():
        config = TrialConfig(batch_size=batch, epochs=2, seed=0, lr=1e-3, optimizer="adamw", **arch)
        pre = make_preprocess("rgb", "dataset", False, x_all.cpu()).to(device)
        for rep in range(reps):  # interleaved: bare, library, bare, library
            torch.manual_seed(0)
            bare = bare_loop(create_model(config, 3, len(data.classes), data.size), x_all, y_all, pre, batch, device)
            lib = train(config, spec, device=device, evaluate_test=False, data=data)
            rows.append({"model": name, "rep": rep, "bare_images_per_s": n / bare[-1],
                         "library_images_per_s": images_per_s(lib, n, batch),
                         "library_over_bare": images_per_s(lib, n, batch) / (n / bare[-1])})
    return rows


def kernel_profile(spec: Any, arch: dict[str, Any], batch: int, device: torch.device, steps: int = 40
                   ) -> dict[str, Any]:
    """Kernels (CUDA) or ops (CPU) per step and the device's busy share of the wall time."""
    from torch.profiler import ProfilerActivity, profile

    from search.core.config import TrialConfig
    from search.data.color import make_preprocess
    from search.data.datasets import prepare
    from search.models.factory import create_model
    from search.study.probe import cut
    from search.train.loop import train

    data = prepare(spec, None, "stretch", device)
    small = cut(data, steps * batch, batch)  # a one-batch validation: the profile is of training steps
    steps = max(1, len(small.train_y) // batch)
    x_all = small.train_x if isinstance(small.train_x, torch.Tensor) else small.train_x.materialize()
    config = TrialConfig(batch_size=batch, epochs=1, seed=0, lr=1e-3, optimizer="adamw", **arch)
    pre = make_preprocess("rgb", "dataset", False, x_all.cpu()).to(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    arms: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare_loop(create_model(config, 3, len(data.classes), data.size), x_all, small.train_y, pre,
                                  batch, device, epochs=1),
        "library": lambda: train(config, spec, device=device, evaluate_test=False, data=small),
    }
    out = {}
    for arm, fn in arms.items():
        fn()  # warm-up
        sync(device)
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            fn()
            sync(device)
        wall = time.perf_counter() - start
        events = prof.events()
        if cuda:
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e6
            out[arm] = {"kernels_per_step": len(kernels) / steps, "gpu_busy_share": busy / wall, "wall_s": wall}
        else:
            ops = [e for e in events if e.name.startswith("aten::")]
            out[arm] = {"aten_ops_per_step": len(ops) / steps, "wall_s": wall}
    return out


# ----------------------------------------------------------------------------- 3: augmentation


def augmentation(spec: Any, arch: dict[str, Any], batch: int, device: torch.device) -> list[dict[str, Any]]:
    from search.core.config import TrialConfig
    from search.data.datasets import prepare
    from search.train.loop import train

    data = prepare(spec, None, "stretch", device)
    n = len(data.train_y)
    arms = {"none": {}, "light": {"augment": "light"}, "standard": {"augment": "standard"},
            "autoaugment (cifar10, learned, per image)": {"policy": "autoaugment", "autoaugment_policy": "cifar10"}}
    rows = []
    for name, extra in arms.items():
        config = TrialConfig(batch_size=batch, epochs=2, seed=0, **arch, **extra)
        result = train(config, spec, device=device, evaluate_test=False, data=data)
        rows.append({"arm": name, "images_per_s": images_per_s(result, n, batch)})
    for r in rows:
        r["x_none"] = r["images_per_s"] / rows[0]["images_per_s"]
    return rows


# ----------------------------------------------------------------------------- 4-6: 224 px photos


def _photos_job(job: tuple[str, int, int]) -> int:
    from benchmarks.large_photos import make_photos

    root, n, seed = job
    make_photos(Path(root), n, seed=seed)
    return n


def make_photo_folder(root: Path, n: int) -> Path:
    """``n`` photo crops (benchmarks.large_photos) in two class folders, written by a process pool."""
    shards = max(1, min(os.cpu_count() or 1, 16)) if n >= 500 else 1
    if shards == 1:  # a few photos: here, without starting processes
        _photos_job((str(root / "shard0"), n, 0))
    per = math.ceil(n / shards)
    jobs = [(str(root / f"shard{i}"), per, i) for i in range(shards)]
    # spawn: this process may hold a CUDA context, which a forked child must not inherit.
    if shards > 1:
        with ProcessPoolExecutor(max_workers=shards, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_photos_job, jobs))
    flat = root / "photos"
    for c in ("a", "b"):
        (flat / c).mkdir(parents=True, exist_ok=True)
        for i in range(shards):
            for f in (root / f"shard{i}" / c).iterdir():
                f.rename(flat / c / f"{i}-{f.name}")
    return flat


def resident(data: Any, device: torch.device) -> Any:
    from search.data.datasets import Prepared

    real = lambda x: (x.materialize() if hasattr(x, "materialize") else x).to(device)  # noqa: E731
    return Prepared(real(data.train_x), data.train_y.to(device), real(data.val_x), data.val_y.to(device),
                    real(data.test_x), data.test_y.to(device), data.classes, data.size)


def mapped(spec: Any, size: int) -> Any:
    """The splits as memory-mapped index sets (what ``prepare`` gives a set too large for the GPU)."""
    from search.data.datasets import MappedImages, Prepared, load_dataset

    d = load_dataset(spec, size)
    parts = [MappedImages(d.images, idx, d.pages) for idx in (d.train, d.val, d.test)]
    return Prepared(parts[0], d.labels[d.train], parts[1], d.labels[d.val], parts[2], d.labels[d.test], d.classes,
                    size)


def photos_224(folder: Path, arch: dict[str, Any], size: int, batch: int, device: torch.device, clock: Clock,
               compile_arm: bool) -> dict[str, Any]:
    from search.core.config import TrialConfig
    from search.core.spec import DatasetSpec
    from search.train.loop import train

    raw_spec = DatasetSpec(path=str(folder), cache="raw")
    jpeg_spec = DatasetSpec(path=str(folder), cache="jpeg", cache_quality=90)
    config = TrialConfig(batch_size=batch, epochs=2, seed=0, input_size=size, **arch)
    on_map = mapped(raw_spec, size)
    arms = {"map + prefetch thread": (raw_spec, on_map), "GPU-resident": (raw_spec, resident(on_map, device)),
            "JPEG cache decoded per batch": (jpeg_spec, mapped(jpeg_spec, size))}
    n = len(on_map.train_y)
    rows = []
    for name, (spec, data) in arms.items():
        result = train(config, spec, device=device, evaluate_test=False, data=data)
        rows.append({"arm": name, "images_per_s": images_per_s(result, n, batch),
                     "decoded_on": str(device) if "JPEG" in name else None})
    base = next(r for r in rows if r["arm"] == "GPU-resident")["images_per_s"]
    for r in rows:
        r["x_resident"] = r["images_per_s"] / base
    out: dict[str, Any] = {"images": n, "arms": rows}
    if compile_arm and clock.allows(150):
        result = train(config.replace(compile=True), raw_spec, device=device, evaluate_test=False,
                       data=arms["GPU-resident"][1])
        out["compile"] = {"images_per_s": images_per_s(result, n, batch, compiled=True),
                          "compile_seconds": result.compile_seconds, "x_resident": images_per_s(result, n, batch,
                                                                                                 compiled=True) / base}
    else:
        out["compile"] = {"skipped": "time budget" if compile_arm else "smoke run"}
    return out


def jpeg_decode(folder: Path, size: int, device: torch.device, batch: int = 128) -> dict[str, Any]:
    from search.core.spec import DatasetSpec
    from search.data.datasets import load_dataset

    d = load_dataset(DatasetSpec(path=str(folder), cache="jpeg", cache_quality=90), size)
    x = d.images
    rows = torch.arange(min(len(x), 8 * batch))
    batches = rows.split(batch)
    out = {}
    for where in ["cpu"] + (["cuda"] if device.type == "cuda" else []):
        x.decode(batches[0], where)
        sync(torch.device(where))
        start = time.perf_counter()
        for b in batches:
            x.decode(b, where)
        sync(torch.device(where))
        out[f"{where} images/s (wall, 1 thread)"] = len(rows) / (time.perf_counter() - start)
    return out


def workers_per_gpu(folder: Path, arch: dict[str, Any], size: int, batch: int, device: torch.device,
                    counts: list[int], steps: int, clock: Clock) -> dict[str, Any]:
    """The study's trial probed at each worker count (as ``--per-gpu auto`` probes), and its choice."""
    import yaml

    from search.study import workers
    from search.study.packing import decide

    if device.type == "cuda":
        # The probes read the card's used memory as their own overhead: release this process's cache.
        torch.cuda.empty_cache()
    work = folder.parent / "study"
    work.mkdir(exist_ok=True)
    space = {"study": "gpu-all", "dataset": {"path": str(folder), "cache": "raw"},
             "budget": {"n_trials": 1, "max_epochs": 2}, "sampler": "random", "pruner": "none",
             "params": {"batch_size": batch, "input_size": size, **arch}}
    (work / "space.yaml").write_text(yaml.safe_dump(space), encoding="utf-8")
    url = f"sqlite:///{work}/studies.db"
    import subprocess
    import sys

    from benchmarks._common import ROOT, child_env

    run = subprocess.run([sys.executable, "-m", "search.cli", "-q", "create", str(work / "space.yaml"), "--storage",
                          url], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1:] or ["create failed"]}
    gpu = "0" if device.type == "cuda" else "cpu"
    dev = "cuda" if device.type == "cuda" else "cpu"
    measured: dict[int, Any] = {}

    def probe(k: int) -> Any:
        if k not in measured:
            measured[k] = workers.probe_gpu("gpu-all", gpu, k, url=url, steps=steps, device=dev)
        return measured[k]

    fixed = []
    for k in counts:
        if not clock.allows(60):
            break
        r = probe(k)
        fixed.append({"workers": k, "images_per_s": r.images_per_s, "out_of_memory": r.out_of_memory})
    decision = decide(probe)
    best = max((f for f in fixed if not f["out_of_memory"]), key=lambda f: f["images_per_s"], default=None)
    chosen = measured[decision.workers].images_per_s
    first = measured[1].memory
    return {"fixed_counts": fixed, "auto": decision.to_dict(),
            "memory_per_worker_gb": first.footprint / 1e9 if first else None,
            "auto_images_per_s": chosen, "best_fixed": best,
            "auto_over_best": chosen / best["images_per_s"] if best else None}


# ----------------------------------------------------------------------------- driver


def run_all(device: torch.device, smoke: bool, budget: float = BUDGET_S) -> dict[str, Any]:
    from benchmarks.gpu import DATASET, register
    from search.core.spec import DatasetSpec

    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's codecs point to TorchCodec
    clock = Clock(budget)
    n32 = 600 if smoke else 50000
    register(n32)
    spec32 = DatasetSpec(name=DATASET)
    small = {"SmallCNN w16 d2": {"width": 16, "depth": 2}} if smoke else \
        {"SmallCNN w64 d3 residual": {"width": 64, "depth": 3, "residual": True},
         "resnet18 (timm, random init)": {"backbone": "resnet18"}}
    big_arch = {"width": 8, "depth": 1} if smoke else {"backbone": "resnet50"}
    size, big_batch = (32, 16) if smoke else (224, 128)
    batch32 = 64 if smoke else 256
    sections: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def section(name: str, need: float, fn: Callable[[], Any]) -> None:
        if not clock.allows(need):
            sections[name] = {"skipped": f"time budget ({clock.elapsed:.0f} s used of {budget:.0f})"}
            return
        start = time.perf_counter()
        try:
            sections[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others' figures
            log.exception("section %s failed", name)
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
        timings[name] = time.perf_counter() - start
        print(f"[{clock.elapsed:6.1f}s] {name} done in {timings[name]:.1f}s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gpu-all-"))
    old_cache = os.environ.get("STRATEGY_SEARCH_CACHE")
    os.environ["STRATEGY_SEARCH_CACHE"] = str(work / "cache")
    try:
        section("overhead_32px", 30 if smoke else 120,
                lambda: overhead(spec32, small, batch32, device, reps=1 if smoke else 2))
        first_arch = next(iter(small.values()))
        section("kernel_profile", 20 if smoke else 60, lambda: kernel_profile(spec32, first_arch, batch32, device,
                                                                               steps=10 if smoke else 40))
        section("augmentation", 20 if smoke else 60, lambda: augmentation(spec32, first_arch, batch32, device))
        folder_holder: dict[str, Path] = {}

        def photos() -> dict[str, Any]:
            folder_holder["folder"] = make_photo_folder(work, 24 if smoke else 6144)
            return {"photos": 24 if smoke else 6144}

        section("photo_folder", 10 if smoke else 60, photos)
        folder = folder_holder.get("folder")
        if folder is not None:
            section("photos_224", 20 if smoke else 90,
                    lambda: photos_224(folder, big_arch, size, big_batch, device, clock, compile_arm=not smoke))
            section("jpeg_decode", 10 if smoke else 20, lambda: jpeg_decode(folder, size, device))
            section("workers_per_gpu", 30 if smoke else 120,
                    lambda: workers_per_gpu(folder, big_arch, size, big_batch, device,
                                            [1] if smoke else [1, 2, 4, 8], 2 if smoke else 20, clock))
    finally:
        if old_cache is None:
            os.environ.pop("STRATEGY_SEARCH_CACHE", None)
        else:
            os.environ["STRATEGY_SEARCH_CACHE"] = old_cache
        shutil.rmtree(work, ignore_errors=True)
    return {"smoke": smoke, "device": str(device), "pending": PENDING if smoke else None,
            "seconds": clock.elapsed, "section_seconds": timings, "sections": sections,
            "goals": goals(sections, smoke)}


def goals(sections: dict[str, Any], smoke: bool) -> dict[str, Any]:
    """Each goal of the issue: the figure, the bar, met or not (pending on a CPU smoke)."""
    def ratio(path: Callable[[], float]) -> float | None:
        try:
            return float(path())
        except (KeyError, TypeError, StopIteration, ZeroDivisionError, ValueError):
            return None

    s = sections
    figures = {
        "overhead_32px": ratio(lambda: min(
            sorted(r["library_over_bare"] for r in s["overhead_32px"] if r["model"] == m)[-1]
            for m in {r["model"] for r in s["overhead_32px"]})),
        "light_vs_none": ratio(lambda: next(r["x_none"] for r in s["augmentation"] if r["arm"] == "light")),
        "map_vs_resident": ratio(lambda: next(r["x_resident"] for r in s["photos_224"]["arms"]
                                               if r["arm"].startswith("map"))),
        "auto_vs_best": ratio(lambda: s["workers_per_gpu"]["auto_over_best"]),
    }
    out = {}
    for name, value in figures.items():
        status = "pending (CPU smoke)" if smoke else ("not measured" if value is None else
                                                     ("met" if value >= GOALS[name] else "missed"))
        out[name] = {"value": value, "goal": f">= {GOALS[name]}", "status": status}
    return out
