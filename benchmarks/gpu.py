"""GPU: epoch time with AMP bf16 and channels_last vs. fp32 on a CIFAR-like workload, and how many
worker processes saturate one GPU.

The workload is 50,000 generated 32x32 color images in 10 classes (class templates with random
brightness, contrast, flips and noise; 60/20/20 split), registered in-process as the built-in
dataset ``cifar-like``. Precision arms train the same model (``create_model``, so the library's
architectures) with a hand-written loop in four settings: fp32 or bf16 autocast, contiguous or
channels_last; the library's own ``train()`` (always bf16 + channels_last on CUDA) is timed beside
them. The saturation test starts 1, 2, 4, 8 worker processes that each run ``train()`` on the
same GPU at once, and reports aggregate training images/s.

Without CUDA it prints why and exits 0 (GPU figures are then pending a GPU session).
``--all`` runs every GPU figure of issue 28 instead (:mod:`benchmarks.gpu_all`, one JSON,
under 8 minutes); without CUDA it runs that script's CPU smoke and marks the figures pending.

    python -m benchmarks.gpu
    python -m benchmarks.gpu --tiny
    python -m benchmarks.gpu --all
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks._common import ROOT, child_env, machine, median, parser, setup_threads, table, write_result

NO_CUDA = "no CUDA device here: GPU benchmark skipped (figures pending a GPU session)"
DATASET = "cifar-like"
SATURATED = 1.10  # doubling the workers gains less than this factor: the GPU is saturated
CLASSES = tuple(f"class{i}" for i in range(10))


def cifar_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` uint8 (3, 32, 32) images of 10 classes; vectorised, a few seconds for 50k."""
    g = torch.Generator().manual_seed(seed)
    classes = list(CLASSES)
    templates = nn.functional.interpolate(torch.rand((10, 3, 4, 4), generator=g), size=(32, 32), mode="bilinear",
                                          align_corners=False)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.empty((n, 3, 32, 32), dtype=torch.uint8)
    for start in range(0, n, 5000):
        y = labels[start : start + 5000]
        m = len(y)
        x = templates[y]
        contrast = 0.6 + 0.8 * torch.rand((m, 1, 1, 1), generator=g)
        bright = 0.3 * (torch.rand((m, 1, 1, 1), generator=g) - 0.5)
        x = (x - 0.5) * contrast + 0.5 + bright
        flip = torch.rand((m,), generator=g) < 0.5
        x[flip] = x[flip].flip(-1)
        x = x + 0.15 * torch.randn(x.shape, generator=g)
        images[start : start + m] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels, classes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def register(n: int) -> None:
    from search.data.builtin import BUILTIN_DATASETS, Builtin

    BUILTIN_DATASETS.add(DATASET, Builtin(lambda seed=0: cifar_like(n, seed)[:2], CLASSES))


def models(tiny: bool) -> dict[str, dict[str, Any]]:
    if tiny:
        return {"SmallCNN w16 d2": {"width": 16, "depth": 2}}
    return {"SmallCNN w64 d3 residual": {"width": 64, "depth": 3, "residual": True},
            "resnet18 (timm, random init)": {"backbone": "resnet18"}}


def plain_epochs(model: nn.Module, data: Any, batch: int, epochs: int, bf16: bool, channels_last: bool,
                 device: torch.device) -> list[float]:
    """Seconds per epoch of a hand-written loop (synchronized), one warm-up epoch not counted."""
    from search.data.color import make_preprocess

    pre = make_preprocess("rgb", "dataset", False, data.train_x.cpu()).to(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    x_all, y_all = data.train_x.to(device), data.train_y.to(device)
    n = len(y_all)
    times = []
    for epoch in range(epochs + 1):
        sync(device)
        start = time.perf_counter()
        order = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            x = pre(x_all[idx])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = nn.functional.cross_entropy(model(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        if epoch > 0:
            times.append(time.perf_counter() - start)
    return times


def precision_arms(tiny: bool, epochs: int, batch: int, device: torch.device) -> list[dict[str, Any]]:
    from search.core.config import TrialConfig
    from search.data.datasets import prepare
    from search.models.factory import create_model
    from search.space.parse import DatasetSpec
    from search.train.loop import train

    spec = DatasetSpec(name=DATASET)
    data = prepare(spec, None, "stretch", device)
    rows = []
    for name, arch in models(tiny).items():
        config = TrialConfig(batch_size=batch, epochs=epochs + 1, seed=0, **arch)
        for bf16, cl in ((False, False), (False, True), (True, False), (True, True)):
            torch.manual_seed(0)
            model = create_model(config, 3, 10, 32)
            secs = plain_epochs(model, data, batch, epochs, bf16, cl, device)
            rows.append({"model": name, "arm": f"{'bf16' if bf16 else 'fp32'}{' + channels_last' if cl else ''}",
                         "epoch_s": median(secs), "images_per_s": len(data.train_y) / median(secs), "raw": secs})
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result = train(config, spec, device=device)
        secs = [h.seconds for h in result.history[1:]]  # first epoch = warm-up
        label = "bf16 + channels_last" if device.type == "cuda" else "fp32: the CPU path"
        rows.append({"model": name, "arm": f"library train() ({label})", "epoch_s": median(secs),
                     "images_per_s": len(data.train_y) / median(secs), "raw": secs})
        fp32 = next(r["epoch_s"] for r in rows if r["model"] == name and r["arm"] == "fp32")
        for r in rows:
            if r["model"] == name:
                r["speedup_vs_fp32"] = fp32 / r["epoch_s"]
    return rows


# ----------------------------------------------------------------------------- workers per GPU


def worker(go: str, n: int, epochs: int, batch: int, arch_json: str, device_name: str) -> int:
    """One worker process: the library's train() on the shared GPU, started by ``go``."""
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    register(n)
    from search.core.config import TrialConfig
    from search.data.datasets import prepare
    from search.space.parse import DatasetSpec
    from search.train.loop import train

    spec = DatasetSpec(name=DATASET)
    device = torch.device(device_name)
    data = prepare(spec, None, "stretch", device)
    config = TrialConfig(batch_size=batch, epochs=1, seed=0, **json.loads(arch_json))
    train(config, spec, device=device, evaluate_test=False)  # warm-up: kernels, allocator
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    start = time.time()
    config.epochs = epochs
    result = train(config, spec, device=device, evaluate_test=False)
    sync(device)
    mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    print(json.dumps({"images": len(data.train_y) * len(result.history), "start": start, "end": time.time(),
                      "train_s": sum(h.seconds for h in result.history), "max_mem_gb": mem}), flush=True)
    return 0


def saturation(counts: list[int], n: int, epochs: int, batch: int, arch: dict[str, Any], device: torch.device
               ) -> list[dict[str, Any]]:
    rows = []
    env = child_env(OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for k in counts:
            go = Path(tmp) / f"go-{k}"
            cmd = [sys.executable, "-m", "benchmarks.gpu", "--worker", str(go), str(n), str(epochs), str(batch),
                   json.dumps(arch), str(device)]
            procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(k)]
            try:
                for p in procs:
                    line = p.stdout.readline() if p.stdout else ""
                    if line.strip() != "ready":
                        raise RuntimeError(f"GPU worker did not start: {line}{p.stderr.read() if p.stderr else ''}")
                start = time.time()
                go.touch()
                outs = [p.communicate(timeout=3600) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            reports = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
            wall = max(r["end"] for r in reports) - start
            images = sum(r["images"] for r in reports)
            rows.append({"workers": k, "images_per_s": images / wall, "wall_s": wall,
                         "max_mem_gb_per_worker": max(r["max_mem_gb"] for r in reports)})
    for prev, cur in zip(rows, rows[1:]):
        cur["gain_vs_previous"] = cur["images_per_s"] / prev["images_per_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7])
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="generated images (default 50000, tiny 2000)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per arm (default 3, tiny 1)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="*", default=None, help="worker counts (default 1 2 4 8)")
    p.add_argument("--force-cpu", action="store_true",
                   help="exercise this script's code on the CPU (a check of the script; the figures mean nothing)")
    p.add_argument("--all", action="store_true",
                   help="every GPU figure of issue 28 in one run (benchmarks/gpu_all.py); without CUDA or with "
                        "--tiny: a CPU smoke of the script, figures pending")
    p.add_argument("--budget", type=float, default=None, help="--all: seconds after which no section starts")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    info = machine()
    if args.all:
        return run_all_main(args, info)
    if not torch.cuda.is_available() and not args.force_cpu:
        print(NO_CUDA)
        path = write_result(args.out, "gpu", info, {"skipped": NO_CUDA}, args.tiny)
        print(f"wrote {path}")
        return 0
    n = args.images or (2000 if args.tiny else 50000)
    epochs = args.epochs or (1 if args.tiny else 3)
    counts = args.workers or ([1, 2] if args.tiny else [1, 2, 4, 8])
    device = torch.device("cpu" if args.force_cpu else "cuda")
    register(n)
    prec = precision_arms(args.tiny, epochs, args.batch, device)
    where = info["cuda"] if device.type == "cuda" else "the CPU (--force-cpu)"
    print(f"\nEpoch time on {where} ({n} CIFAR-like 32x32 images, 60% train, batch {args.batch}; median of "
          f"{epochs} epochs after a warm-up)")
    print(table(["model", "arm", "s/epoch", "train images/s", "x fp32"],
                [(r["model"], r["arm"], r["epoch_s"], r["images_per_s"], r["speedup_vs_fp32"]) for r in prec]))
    arch = {"width": 64, "depth": 3, "residual": True} if not args.tiny else {"width": 16, "depth": 2}
    sat = saturation(counts, n, epochs, args.batch, arch, device)
    saturated_at = next((r["workers"] for r in sat[1:] if r["gain_vs_previous"] < SATURATED), None)
    print(f"\nWorkers sharing one GPU (library train(), SmallCNN {arch}; saturated when doubling gains < "
          f"{SATURATED}x)")
    print(table(["workers", "aggregate train images/s", "gain vs previous", "GPU GB per worker"],
                [(r["workers"], r["images_per_s"], r.get("gain_vs_previous", float("nan")),
                  r["max_mem_gb_per_worker"]) for r in sat]))
    print(f"saturated at: {saturated_at or 'not within ' + str(counts[-1]) + ' workers'}")
    path = write_result(args.out, "gpu", info, {"images": n, "epochs": epochs, "batch": args.batch,
                                                "precision": prec, "saturation": sat, "saturated_at": saturated_at,
                                                "saturation_model": arch, "device": str(device)}, args.tiny)
    print(f"\nwrote {path}")
    return 0


def run_all_main(args: Any, info: dict[str, Any]) -> int:
    from benchmarks.gpu_all import BUDGET_S, run_all

    cuda = torch.cuda.is_available()
    smoke = args.tiny or not cuda
    device = torch.device("cuda" if cuda and not args.tiny else "cpu")
    if not cuda:
        print(NO_CUDA + "; running the CPU smoke of --all")
    result = run_all(device, smoke, args.budget or BUDGET_S)
    where = info["cuda"] if device.type == "cuda" else "the CPU (smoke: figures pending a GPU)"
    print(f"\nIssue 28's GPU figures on {where}, {result['seconds']:.0f} s")
    print(table(["goal", "figure", "bar", "status"],
                [(k, v["value"] if v["value"] is not None else float("nan"), v["goal"], v["status"])
                 for k, v in result["goals"].items()]))
    for name, body in result["sections"].items():
        print(f"{name}: {json.dumps(body, default=str)[:600]}")
    path = write_result(args.out, "gpu-all", info, result, smoke)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
