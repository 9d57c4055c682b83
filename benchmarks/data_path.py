"""Data path: training images/s with the in-memory tensor cache vs. decoding files every epoch.

The cache arm is the library's path: ``prepare()`` decodes and resizes once per process, and each
step indexes uint8 tensors (``BatchAugment`` for random augmentation). The disk arms write the
same training images as an ImageFolder tree (PNG at native size, and JPEG at 4x the size to stand
in for photos that must be resized) and read them with torchvision's ``ImageFolder`` and a
``DataLoader`` every epoch, as a hand-written pipeline would. Every arm trains the same model with
the same step; epochs of all arms are interleaved, and each step is split into "data" (fetch,
decode, augment, copy) and "compute" (preprocess, forward, backward, optimizer) time.

On CUDA (when present) the cache lives on the GPU and augmentation runs there; it is compared
with augmenting on the CPU and copying each batch. ``BatchAugment`` runs crop and flip batched
(one vectorised op per batch); an arm with its per-image torchvision path shows what that saves,
and a micro-benchmark times ``BatchAugment("light")`` alone, per-image vs batched, ms per batch.

    python -m benchmarks.data_path
    python -m benchmarks.data_path --tiny
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import datasets as tv_datasets
from torchvision.transforms import v2

from benchmarks._common import machine, median, parser, setup_threads, table, write_result
from search.core.config import TrialConfig
from search.data.color import make_preprocess
from search.data.datasets import GPU_CACHE_FRACTION, Prepared, load_dataset, prepare
from search.data.transforms import BatchAugment, resolve_augment
from search.models.cnn import SmallCNN
from search.space.parse import DatasetSpec
from search.train.loop import train

Batches = Callable[[], Iterator[tuple[Tensor, Tensor]]]


@dataclass
class Arm:
    name: str
    batches: Batches  # one epoch of (uint8 images on the device, labels on the device)
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: list[dict[str, float]] = field(default_factory=list)
    note: str = ""
    workers: int = 0


def _light(size: int) -> list[v2.Transform]:
    # Exactly the library's "light" set: reflect-pad crop (1/8 of the size) + horizontal flip.
    plan = resolve_augment("light")
    pipeline = plan.build(size)
    assert pipeline is not None
    return list(pipeline.transforms)


def write_folder(root: Path, images: Tensor, labels: Tensor, classes: list[str], fmt: str, side: int) -> Path:
    """The training images as ``root/<class>/<i>.<fmt>`` at ``side`` x ``side`` pixels."""
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels.tolist())):
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        if side != pil.width:
            pil = pil.resize((side, side), Image.BICUBIC)
        pil.save(root / classes[y] / f"{i:05d}.{fmt}", quality=90) if fmt == "jpg" else pil.save(
            root / classes[y] / f"{i:05d}.{fmt}")
    return root


def cache_batches(data: Prepared, batch: int, augment: BatchAugment | None, device: torch.device,
                  seed: int) -> Batches:
    """The library's path: index the cached tensors (wherever prepare() put them)."""
    generator = torch.Generator().manual_seed(seed)

    def epoch() -> Iterator[tuple[Tensor, Tensor]]:
        n = len(data.train_y)
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            idx = idx.to(data.train_x.device)
            xb, yb = data.train_x[idx], data.train_y[idx]
            if augment is not None:
                xb = augment(xb)
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    return epoch


def disk_batches(root: Path, size: int, batch: int, augment: bool, workers: int, device: torch.device,
                 seed: int) -> Batches:
    """Decode every file every epoch: ImageFolder + DataLoader (workers persist across epochs)."""
    ops: list[v2.Transform] = [v2.PILToTensor()]
    ops.append(v2.Resize([size, size], antialias=True))  # a no-op at native size
    if augment:
        ops.extend(_light(size))
    folder = tv_datasets.ImageFolder(str(root), transform=v2.Compose(ops))
    loader = torch.utils.data.DataLoader(
        folder, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
        pin_memory=device.type == "cuda", drop_last=False, generator=torch.Generator().manual_seed(seed),
    )

    def epoch() -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in loader:
            if len(yb) < 2:
                continue
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    return epoch


def make_arm(name: str, batches: Batches, data: Prepared, config: TrialConfig, device: torch.device,
             note: str = "", workers: int = 0) -> Arm:
    torch.manual_seed(0)
    model = SmallCNN(3, len(data.classes), data.size, depth=config.depth, width=config.width).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    return Arm(name, batches, device, model, optimizer, note=note, workers=workers)


def run_epoch(arm: Arm, preprocess: nn.Module) -> dict[str, float]:
    """One epoch; wall and CPU seconds split into data (waiting for the batch) and compute."""
    cuda = arm.device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    arm.model.train()
    data_s = compute_s = 0.0
    images = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    it = arm.batches()
    while True:
        t0 = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        x = preprocess(xb)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = nn.functional.cross_entropy(arm.model(x).float(), yb)
        arm.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        arm.optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        data_s += t1 - t0
        compute_s += t2 - t1
        images += len(yb)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "data_s": data_s, "compute_s": compute_s, "images": images}


def augment_micro(device: torch.device, tiny: bool) -> list[dict[str, Any]]:
    """ms per batch of BatchAugment("light"): per-image v2 path vs batched (median of repeats)."""
    rows = []
    for n, side in ((64, 32), (256, 64)):
        x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device=device)
        plan = resolve_augment("light")
        row: dict[str, Any] = {"device": str(device), "batch": f"{n} x 3 x {side} x {side}"}
        for label, per_image in (("per_image_ms", True), ("batched_ms", False)):
            aug = BatchAugment(plan, side, per_image=per_image)
            aug(x)  # warm-up (imports, kernels)
            times = []
            for _ in range(2 if tiny else 7):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                aug(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1000)
            row[label] = median(times)
        row["speedup"] = row["per_image_ms"] / row["batched_ms"]
        rows.append(row)
    return rows


def decode_only(batches: Batches) -> dict[str, float]:
    wall0, cpu0, images = time.perf_counter(), time.process_time(), 0
    for _, yb in batches():
        images += len(yb)
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0, "images": images}


def summarize(arm: Arm, baseline: float | None, workers: int = 0) -> dict[str, Any]:
    ep = arm.epochs
    images = ep[0]["images"]
    wall = median(e["wall_s"] for e in ep)
    # With DataLoader workers the decoding CPU time is spent in other processes: no CPU figure then.
    per_cpu = images / median(e["cpu_s"] for e in ep) if workers == 0 else float("nan")
    out = {
        "arm": arm.name, "device": str(arm.device), "note": arm.note, "epochs": len(ep), "images_per_epoch": images,
        "images_per_s": images / wall, "images_per_cpu_s": per_cpu, "loader_workers": workers,
        "data_share": median(e["data_s"] / e["wall_s"] for e in ep),
        "epoch_wall_s": wall, "raw": ep,
    }
    out["speed_vs_cache"] = out["images_per_s"] / baseline if baseline else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per arm (default 5, tiny 1)")
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="DataLoader worker counts for the disk arms (default 0 2; tiny 0)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    epochs = args.epochs or (1 if args.tiny else 5)
    workers = args.workers if args.workers is not None else ([0] if args.tiny else [0, 2])
    spec = DatasetSpec(name="digits", limit=300) if args.tiny else DatasetSpec(name="shapes")
    config = TrialConfig(width=4 if args.tiny else 16, depth=2, batch_size=64, lr=1e-3, seed=0)
    info = machine()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    gpu_note = None if torch.cuda.is_available() else "no CUDA device here: GPU figures pending a GPU session"
    if gpu_note:
        print(gpu_note)

    full = load_dataset(spec)
    results: list[dict[str, Any]] = []
    micro: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        native = full.native_size or 32
        cpu_data = prepare(spec, None, "stretch", torch.device("cpu"))
        big = 4 * native
        t0 = time.perf_counter()
        png = write_folder(Path(tmp) / "png", cpu_data.train_x, cpu_data.train_y, cpu_data.classes, "png", native)
        jpg = write_folder(Path(tmp) / "jpg", cpu_data.train_x, cpu_data.train_y, cpu_data.classes, "jpg", big)
        print(f"wrote {len(cpu_data.train_y)} training images as {native}px PNG and {big}px JPEG "
              f"in {time.perf_counter() - t0:.1f}s")

        for device in devices:
            data = prepare(spec, None, "stretch", device)
            preprocess = make_preprocess("rgb", "dataset", False, data.train_x.cpu()).to(device)
            light = BatchAugment(resolve_augment("light"), data.size)
            per_image = BatchAugment(resolve_augment("light"), data.size, per_image=True)
            arms = [make_arm("tensor cache", cache_batches(data, 64, None, device, 0), data, config, device,
                             note=f"cache on {data.train_x.device.type}"),
                    make_arm("tensor cache + crop/flip", cache_batches(data, 64, light, device, 0), data, config,
                             device, note=f"BatchAugment (batched) on {data.train_x.device.type}"),
                    make_arm("tensor cache + crop/flip per image", cache_batches(data, 64, per_image, device, 0),
                             data, config, device, note=f"v2 pipeline per image on {data.train_x.device.type}")]
            if device.type == "cuda":
                host = Prepared(*(t.cpu() for t in (data.train_x, data.train_y, data.val_x, data.val_y,
                                                     data.test_x, data.test_y)), data.classes, data.size)
                arms.append(make_arm("host cache + crop/flip on CPU, copy", cache_batches(host, 64, light, device, 0),
                                     data, config, device, note="augment before the copy"))
            for w in workers:
                for label, root, aug in ((f"PNG {native}px, decode each epoch", png, False),
                                         (f"PNG {native}px + crop/flip", png, True),
                                         (f"JPEG {big}px -> {native}px, decode+resize each epoch", jpg, False)):
                    arms.append(make_arm(f"{label}, workers={w}", disk_batches(root, data.size, 64, aug, w, device, 0),
                                         data, config, device, workers=w))
            for arm in arms:  # warm-up epoch (starts DataLoader workers, allocator, kernels)
                run_epoch(arm, preprocess)
            for e in range(epochs):
                order = arms if e % 2 == 0 else arms[::-1]
                for arm in order:
                    arm.epochs.append(run_epoch(arm, preprocess))
            base = None
            for arm in arms:
                r = summarize(arm, base, arm.workers)
                base = base or r["images_per_s"]
                results.append(r)
            # Decoding alone (no training): the ceiling of each disk pipeline here.
            for fmt, root in (("PNG", png), ("JPEG", jpg)):
                dec = [decode_only(disk_batches(root, data.size, 64, False, 0, torch.device("cpu"), 0))
                       for _ in range(max(1, min(3, epochs)))]
                results.append({"arm": f"{fmt}: decode only, workers=0 (no training)", "device": "cpu",
                                "note": "", "epochs": len(dec), "images_per_epoch": dec[0]["images"],
                                "images_per_s": dec[0]["images"] / median(d["wall_s"] for d in dec),
                                "images_per_cpu_s": dec[0]["images"] / median(d["cpu_s"] for d in dec),
                                "data_share": 1.0, "speed_vs_cache": float("nan"), "raw": dec})
            # Cross-check: the library's own train() on the same cache (epoch seconds from its history).
            lib = train(TrialConfig(**{**config.to_dict(), "epochs": epochs}), spec, device=device)
            lib_ips = len(data.train_y) / median(h.seconds for h in lib.history)
            results.append({"arm": "library train() epoch (cache)", "device": str(device), "note": "history seconds",
                            "epochs": epochs, "images_per_epoch": len(data.train_y), "images_per_s": lib_ips,
                            "images_per_cpu_s": float("nan"), "data_share": float("nan"),
                            "speed_vs_cache": lib_ips / base if base else float("nan"), "raw": []})
            del arms
            micro.extend(augment_micro(device, args.tiny))

    print(f"\nTraining-loop throughput ({spec.label}, SmallCNN width {config.width}, batch 64; median of {epochs} "
          "interleaved epochs)")
    print(table(["arm", "device", "images/s", "images/CPU-s", "x cache", "data share of epoch", "note"],
                [(r["arm"], r["device"], r["images_per_s"], r["images_per_cpu_s"], r["speed_vs_cache"],
                  r["data_share"], r["note"]) for r in results]))
    print("\nBatchAugment(\"light\") alone, ms per uint8 batch (median)")
    print(table(["device", "batch", "per image ms", "batched ms", "speed-up"],
                [(r["device"], r["batch"], r["per_image_ms"], r["batched_ms"], r["speedup"]) for r in micro]))
    path = write_result(args.out, "data_path", info,
                        {"dataset": spec.label, "config": config.to_dict(), "epochs": epochs, "workers": workers,
                         "gpu_cache_fraction": GPU_CACHE_FRACTION, "gpu_note": gpu_note, "results": results,
                         "augment_micro": micro},
                        args.tiny)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
