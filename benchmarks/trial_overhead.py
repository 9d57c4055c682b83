"""Trial overhead: one strategy-search trial vs. a plain hand-written PyTorch loop.

Both arms train the same ``SmallCNN`` on the same cached uint8 tensors for the same epochs, with
the same batch size, optimizer, normalization, augmentation and seed, and both evaluate the
validation split after every epoch (a search needs that number). The library arm is
``search.train.loop.train`` exactly as a trial calls it, so it also pays for what a trial records:
the gradient norm per step, a final validation and test evaluation, the latency measurement and
the dataset statistics. Arms alternate, the ratio is taken per repetition, and the median is
reported. Target: library / plain <= 1.10.

Both arms run single-threaded by default, so the process CPU time (user + system) is the
primary figure: on a machine shared with other jobs it moves far less than the wall clock,
which is reported beside it.

    python -m benchmarks.trial_overhead            # CPU (and CUDA when present)
    python -m benchmarks.trial_overhead --tiny     # smoke run
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # also runnable as ``python benchmarks/trial_overhead.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from benchmarks._common import (machine, median, parser, profile_call, profile_rows,
                                setup_threads, table, write_result)
from search.core.config import TrialConfig
from search.data.datasets import Prepared, prepare
from search.models.cnn import SmallCNN
from search.space.parse import DatasetSpec
from search.train.loop import evaluate, measure_latency, train
from search.data.color import build_preprocess, make_preprocess

TARGET = 1.10


@dataclass(frozen=True)
class Case:
    name: str
    dataset: DatasetSpec
    config: TrialConfig


def cases(tiny: bool) -> list[Case]:
    if tiny:
        return [Case("digits-tiny", DatasetSpec(name="digits", limit=300),
                     TrialConfig(width=4, depth=2, batch_size=64, epochs=2, seed=0))]
    base = TrialConfig(width=16, depth=2, batch_size=64, epochs=10, lr=1e-3, optimizer="adamw", seed=0)
    return [
        Case("digits 8x8, w16, 10 ep", DatasetSpec(name="digits"), base),
        Case("shapes 32x32, w16, 10 ep", DatasetSpec(name="shapes"), base),
        Case("shapes 32x32, w16, 10 ep, crop+flip", DatasetSpec(name="shapes"), base.replace(augment="light")),
    ]


# ----------------------------------------------------------------------------- the plain arm


def plain_train(data: Prepared, config: TrialConfig, device: torch.device, bookkeeping: bool = False
                ) -> dict[str, Any]:
    """What one would write by hand: seed, normalize, train, validate each epoch.

    ``bookkeeping`` adds, per step, what the library's loop does beyond this (an explanation arm,
    not a baseline): the preprocessing module, a fresh autocast context, the finite-loss check, the
    gradient norm via ``clip_grad_norm_`` (max_norm inf) read back as a float, the LambdaLR step
    and the running loss/accuracy.
    """
    seed = config.seed or 0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    x_train, y_train = data.train_x, data.train_y.to(device)
    pixels = x_train.cpu().float().div(255.0).double()
    mean = pixels.mean(dim=(0, 2, 3)).float().view(1, -1, 1, 1).to(device)
    std = pixels.var(dim=(0, 2, 3), unbiased=False).sqrt().clamp(min=1e-3).float().view(1, -1, 1, 1).to(device)
    del pixels
    size = data.size
    augment = None
    if config.augment == "light":  # the library's "light" set: reflect-pad crop (1/8 of the size) + h-flip
        augment = v2.Compose([v2.RandomCrop(size, padding=max(1, round(size * 0.125)), padding_mode="reflect"),
                              v2.RandomHorizontalFlip(0.5)])
    elif config.augment != "none":
        raise ValueError(f"plain arm only knows augment none/light, got {config.augment!r}")
    model = SmallCNN(3, len(data.classes), size, depth=config.depth, width=config.width).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    if bookkeeping:
        module = build_preprocess("rgb", mean.flatten().tolist(), std.flatten().tolist()).to(device)
        params = list(model.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    generator = torch.Generator().manual_seed(seed)
    n, batch = len(y_train), min(config.batch_size, len(y_train))
    epoch_seconds, val_acc = [], float("nan")
    for _ in range(int(config.epochs or 1)):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        total, correct_t, grad_max = torch.zeros((), device=device), torch.zeros((), device=device), 0.0
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue  # BatchNorm cannot train on one image
            idx = idx.to(x_train.device)
            xb, yb = x_train[idx], y_train[idx.to(device)]
            if augment is not None:
                xb = torch.stack([augment(img) for img in xb])
            x = module(xb.to(device)) if bookkeeping else (xb.to(device).float().div(255.0) - mean) / std
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            if bookkeeping:
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
            with amp:
                logits = model(x)
                loss = loss_fn(logits.float(), yb)
            if bookkeeping and not torch.isfinite(loss):
                raise RuntimeError("non-finite loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if bookkeeping:
                grad_max = max(grad_max, float(torch.nn.utils.clip_grad_norm_(params, float("inf"))))
            optimizer.step()
            if bookkeeping:
                scheduler.step()
                total += loss.detach() * len(yb)
                correct_t += (logits.argmax(dim=1) == yb).sum()
        if cuda:
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
        model.eval()
        correct = 0
        with torch.no_grad(), amp:
            for i in range(0, len(data.val_y), 512):
                x = (data.val_x[i : i + 512].to(device).float().div(255.0) - mean) / std
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                correct += int((model(x).argmax(dim=1) == data.val_y[i : i + 512].to(device)).sum())
        val_acc = correct / max(1, len(data.val_y))
    return {"val_accuracy": val_acc, "epoch_seconds": epoch_seconds}


def library_train(case: Case, device: torch.device) -> dict[str, Any]:
    result = train(case.config, case.dataset, device=device)  # as search.study.objective calls it
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"val_accuracy": result.val.accuracy, "epoch_seconds": [h.seconds for h in result.history]}


# ----------------------------------------------------------------------------- measurement


def _cpu(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return median(times)


def extras(case: Case, device: torch.device) -> dict[str, float]:
    """CPU seconds per trial of what the library does beyond the plain loop, measured one by one."""
    result = train(case.config, case.dataset, device=device)
    data = prepare(case.dataset, case.config.input_size, case.config.aspect, device)
    model, pre, k = result.model, result.preprocess, len(result.classes)
    epochs = len(result.history)
    n, batch = len(data.train_y), min(case.config.batch_size, len(data.train_y))
    steps = epochs * (n // batch + (1 if n % batch > 1 else 0))
    # One backward so the gradient-norm call has gradients to read.
    model.train()
    x = pre(data.train_x[:batch].to(device))
    nn.functional.cross_entropy(model(x), data.train_y[:batch].to(device)).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(x).detach()
    yb = data.train_y[:batch].to(device)
    total, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)

    def step_extras() -> None:
        nonlocal total, correct
        for _ in range(100):
            norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            float(norm)
            bool(torch.isfinite(logits[0, 0]))
            total += logits[0, 0] * len(yb)
            correct += (logits.argmax(dim=1) == yb).sum()

    return {
        "final validation re-evaluation": _cpu(lambda: evaluate(model, pre, data.val_x, data.val_y, k, device)),
        "test evaluation": _cpu(lambda: evaluate(model, pre, data.test_x, data.test_y, k, device)),
        "latency measurement": _cpu(lambda: measure_latency(model, pre, data.val_x, device), repeat=3),
        "dataset statistics (make_preprocess)": _cpu(
            lambda: make_preprocess(case.config.color, case.config.normalize, False, data.train_x.cpu())),
        "per-step grad norm + finite check + running metrics": _cpu(step_extras, repeat=3) * steps / 100,
    }



def measure(case: Case, device: torch.device, reps: int) -> dict[str, Any]:
    data = prepare(case.dataset, case.config.input_size, case.config.aspect, device)  # fill the cache once
    arms = {"library": lambda: library_train(case, device), "plain": lambda: plain_train(data, case.config, device),
            "plain+bookkeeping": lambda: plain_train(data, case.config, device, bookkeeping=True)}
    for fn in arms.values():  # warm-up: allocator, thread pools, lazy imports
        fn()
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    ratios, wall_ratios, train_ratios, book_ratios = [], [], [], []
    for rep in range(reps):
        order = list(arms) if rep % 2 == 0 else list(arms)[::-1]
        got: dict[str, dict[str, Any]] = {}
        for arm in order:
            start, cpu = time.perf_counter(), time.process_time()
            out = arms[arm]()
            out["seconds"] = time.perf_counter() - start
            out["cpu_seconds"] = time.process_time() - cpu
            got[arm] = out
            runs[arm].append(out)
        ratios.append(got["library"]["cpu_seconds"] / got["plain"]["cpu_seconds"])
        wall_ratios.append(got["library"]["seconds"] / got["plain"]["seconds"])
        book_ratios.append(got["plain+bookkeeping"]["cpu_seconds"] / got["plain"]["cpu_seconds"])
        train_ratios.append(sum(got["library"]["epoch_seconds"]) / sum(got["plain"]["epoch_seconds"]))
    extra = extras(case, device)
    _, lib_profile = profile_call(arms["library"])
    _, plain_profile = profile_call(arms["plain"])
    lib_s = median(r["cpu_seconds"] for r in runs["library"])
    plain_s = median(r["cpu_seconds"] for r in runs["plain"])
    return {
        "case": case.name, "device": str(device), "dataset": case.dataset.label, "limit": case.dataset.limit,
        "config": case.config.to_dict(), "n_train": len(data.train_y), "n_val": len(data.val_y),
        "reps": reps,
        "library_cpu_seconds": lib_s, "plain_cpu_seconds": plain_s,
        "library_wall_seconds": median(r["seconds"] for r in runs["library"]),
        "plain_wall_seconds": median(r["seconds"] for r in runs["plain"]),
        "ratio": median(ratios), "ratios": ratios,
        "wall_ratio": median(wall_ratios), "wall_ratios": wall_ratios,
        "train_loop_ratio": median(train_ratios),
        "bookkeeping_ratio": median(book_ratios), "bookkeeping_ratios": book_ratios,
        "library_epoch_seconds": median(median(r["epoch_seconds"]) for r in runs["library"]),
        "plain_epoch_seconds": median(median(r["epoch_seconds"]) for r in runs["plain"]),
        "library_val_accuracy": runs["library"][-1]["val_accuracy"],
        "plain_val_accuracy": runs["plain"][-1]["val_accuracy"],
        "meets_target": median(ratios) <= TARGET,
        "profile_library": lib_profile, "profile_plain": plain_profile,
        "extras_cpu_seconds": extra,
        # Wall seconds outside the epochs' training steps (validation, statistics, model, latency...).
        "library_fixed_seconds": median(r["seconds"] - sum(r["epoch_seconds"]) for r in runs["library"]),
        "plain_fixed_seconds": median(r["seconds"] - sum(r["epoch_seconds"]) for r in runs["plain"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per arm (default 5, tiny 1)")
    p.add_argument("--case", default=None, help="only cases whose name contains this")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                   help="all: the CPU, and CUDA when present")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    reps = args.reps or (1 if args.tiny else 5)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    gpu_note = None
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            gpu_note = "no CUDA device here: GPU figures pending a GPU session"
            print(gpu_note)
    info = machine()
    results = []
    for device in devices:
        for case in [c for c in cases(args.tiny) if args.case is None or args.case in c.name]:
            r = measure(case, device, reps)
            results.append(r)
            print(f"{r['case']} [{r['device']}]: library {r['library_cpu_seconds']:.2f} CPU-s, plain "
                  f"{r['plain_cpu_seconds']:.2f} CPU-s, ratio {r['ratio']:.3f} (wall {r['wall_ratio']:.3f})",
                  flush=True)

    print("\nTrial overhead (median of", reps, "alternating repetitions; target ratio <=", TARGET, ")")
    print(table(
        ["case", "device", "library CPU-s", "plain CPU-s", "ratio (CPU)", "ratio (wall)", "train-loop ratio (wall)",
         "outside-epoch wall s lib/plain", "val acc lib/plain", "target"],
        [(r["case"], r["device"], r["library_cpu_seconds"], r["plain_cpu_seconds"], r["ratio"], r["wall_ratio"],
          r["train_loop_ratio"],
          f"{r['library_fixed_seconds']:.2f}/{r['plain_fixed_seconds']:.2f}",
          f"{r['library_val_accuracy']:.3f}/{r['plain_val_accuracy']:.3f}",
          "met" if r["meets_target"] else "MISSED") for r in results],
    ))
    print("\nWhat a trial does beyond the plain loop: CPU seconds per trial, measured one by one,"
          " as a share of the plain arm's CPU time")
    rows = []
    for r in results:
        for what, secs in r["extras_cpu_seconds"].items():
            rows.append((r["case"], r["device"], what, secs, f"{100 * secs / r['plain_cpu_seconds']:.1f}%"))
    print(table(["case", "device", "extra work", "CPU s", "share of plain"], rows))
    print("\nPer-step bookkeeping alone: the plain loop plus the library's per-step extras, CPU time / plain")
    print(table(["case", "device", "plain+bookkeeping / plain", "library / plain"],
                [(r["case"], r["device"], r["bookkeeping_ratio"], r["ratio"]) for r in results]))
    for r in results:
        if not r["meets_target"] or args.tiny:
            print(f"\nProfile of {r['case']} [{r['device']}] (cumulative CPU seconds under cProfile):")
            plain = r["profile_plain"]
            print(table(["where", "library s", "calls", "share", "plain s"],
                        [(*row, plain[row[0]]["seconds"]) for row in profile_rows(r["profile_library"])]))
    path = write_result(args.out, "trial_overhead", info,
                        {"target": TARGET, "reps": reps, "gpu_note": gpu_note, "results": results}, args.tiny)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
