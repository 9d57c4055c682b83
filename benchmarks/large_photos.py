"""Large photos: the raw (decoded) cache vs. a cache of resized, re-encoded JPEGs, at 224 px.

Photos: ``--n`` crops of scikit-learn's two sample photographs (427x640, shipped with the
package), random position, scale 0.3-1 and aspect 0.8-1.25, mirrored at random, with a random
brightness/color cast, saved as JPEG quality 92 at 320-640 px wide: real photographic content,
so the JPEG sizes and decode costs are a photo's, not a synthetic pattern's.

Both caches are built by the library (``strategy-search``'s own ``load_dataset`` on the folder,
``dataset.cache: raw`` and ``jpeg``) and read through its own path (``prepare()`` and the
training loop's batch iterator: shuffled batches of 64, gathered or decoded in the prefetch
thread). Measured, on the CPU, single-threaded, as CPU time of the process (steady on a shared
machine):

* disk per image of each cache, and the JPEG cache's fidelity (PSNR against the raw cache) at
  quality 90 and 95, chroma 4:2:0 (PIL's default) and 4:4:4;
* decode throughput per core: ``torchvision.io.decode_jpeg`` on a list (one call per batch, the
  library's path), one call per image, and PIL; against gathering the same batches from the
  memory-mapped raw cache (page cache warm);
* an epoch of batches through ``iterate_batches`` from each cache (images per CPU-second);
* the extrapolation to a 10^6-image, 224 px study: disk and CPU-seconds of decoding per epoch.

GPU decoding (nvJPEG, ``decode_jpeg(..., device="cuda")``) is measured by ``benchmarks.gpu --all``.

    python -m benchmarks.large_photos            # 2,000 photos
    python -m benchmarks.large_photos --tiny     # 120 photos, seconds
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks._common import machine, median, parser, setup_threads, table, write_result

SIZE = 224
BATCH = 64
STUDY_IMAGES = 10**6


def make_photos(root: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """``n`` photo crops as JPEG files in two class folders; returns their total bytes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    total = 0
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = photos[i % len(photos)]
        h, w, _ = im.shape
        scale = rng.uniform(0.3, 1.0)
        ch = int(h * math.sqrt(scale))
        cw = min(w, int(ch * rng.uniform(0.8, 1.25) * w / h))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = im[y : y + ch, x : x + cw].astype(np.float32)
        crop = crop * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15, size=3)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        width = int(rng.integers(320, 641))
        img = Image.fromarray(crop.clip(0, 255).astype(np.uint8)).resize((width, int(width * ch / cw)), Image.BILINEAR)
        path = root / ("a" if i % 2 else "b") / f"{i:06d}.jpg"
        img.save(path, "JPEG", quality=92)
        total += path.stat().st_size
    return {"photos": n, "bytes": total}


def encoding_table(raw: np.ndarray) -> list[dict[str, Any]]:
    """Bytes per image and PSNR against the raw pixels for quality x chroma subsampling."""
    from PIL import Image

    rows = []
    for quality in (90, 95):
        for subsampling, label in ((2, "4:2:0"), (0, "4:4:4")):
            sizes, errors = [], []
            for img in raw:
                buf = io.BytesIO()
                Image.fromarray(img.transpose(1, 2, 0)).save(buf, "JPEG", quality=quality, subsampling=subsampling)
                back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).transpose(2, 0, 1)
                sizes.append(len(buf.getvalue()))
                errors.append(np.mean((back.astype(np.float64) - img) ** 2))
            mse = float(np.mean(errors))
            rows.append({"quality": quality, "chroma": label, "bytes_per_image": float(np.mean(sizes)),
                         "psnr_db": 10 * math.log10(255**2 / mse) if mse > 0 else math.inf,
                         "x_smaller_than_raw": 3 * SIZE * SIZE / float(np.mean(sizes))})
    return rows


def per_core(fn: Callable[[], int], repeats: int = 3) -> float:
    """Images per CPU-second of ``fn`` (returns images done), best of ``repeats``."""
    fn()  # warm: page cache, lazy imports
    rates = []
    for _ in range(repeats):
        start = time.process_time()
        n = fn()
        rates.append(n / max(1e-9, time.process_time() - start))
    return max(rates)


def decode_rates(raw_x: Any, jpeg_x: Any, batches: list[torch.Tensor]) -> dict[str, float]:
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg_base = jpeg_x.base
    blobs = [jpeg_base.encoded(jpeg_x.index[b].numpy()) for b in batches]
    total = sum(len(b) for b in batches)

    def gather_raw() -> int:
        for b in batches:
            raw_x[b]
        return total

    def decode_list() -> int:
        for bl in blobs:
            torch.stack(decode_jpeg(bl, mode=ImageReadMode.RGB))
        return total

    def decode_each() -> int:
        for bl in blobs:
            torch.stack([decode_jpeg(x, mode=ImageReadMode.RGB) for x in bl])
        return total

    def decode_pil() -> int:
        for bl in blobs:
            np.stack([np.asarray(Image.open(io.BytesIO(x.numpy().tobytes())).convert("RGB")) for x in bl])
        return total

    def library_jpeg() -> int:
        for b in batches:
            jpeg_x[b]
        return total

    return {"raw map gather (library)": per_core(gather_raw),
            "JPEG cache, library path (decode_jpeg on a list)": per_core(library_jpeg),
            "decode_jpeg on a list (decode only)": per_core(decode_list),
            "decode_jpeg one call per image": per_core(decode_each),
            "PIL decode per image": per_core(decode_pil)}


def epoch_rate(data: Any) -> float:
    """Images per CPU-second of one epoch of shuffled batches through the training loop's iterator."""
    from search.train.batches import iterate_batches

    n = len(data.train_y)
    steps = n // BATCH

    def epoch() -> int:
        order = torch.randperm(n)
        seen = 0
        for _, xb, _ in iterate_batches(data.train_x, data.train_y, order, BATCH, steps, torch.device("cpu")):
            seen += len(xb)
        return seen

    return per_core(epoch, repeats=2)


def main(argv: list[str] | None = None) -> int:
    from search.core.spec import DatasetSpec
    from search.data.datasets import clear_cache, load_dataset, prepare

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="photos (default 2000, tiny 120)")
    p.add_argument("--workdir", type=Path, default=None, help="where photos and caches go (default: a temp dir)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's codecs point to TorchCodec
    n = args.n or (120 if args.tiny else 2000)
    info = machine()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="large-photos-"))
    try:
        photos = make_photos(work / "photos", n)
        specs = {fmt: DatasetSpec(path=str(work / "photos"), cache=fmt, cache_quality=90) for fmt in ("raw", "jpeg")}
        builds = {}
        os.environ["STRATEGY_SEARCH_CACHE"] = str(work / "cache")
        for fmt, spec in specs.items():
            start, cpu = time.perf_counter(), time.process_time()
            data = load_dataset(spec, SIZE)
            builds[fmt] = {"seconds": time.perf_counter() - start, "cpu_seconds_this_process": time.process_time() - cpu,
                           "format": data.info["cache_format"], "images": len(data.labels)}
            entry_bytes = sum(f.stat().st_size for f in (work / "cache").rglob("*")
                              if f.is_file() and (("jpeg90" in f.name) == (fmt == "jpeg")) and f.suffix in (".npy", ".bin"))
            builds[fmt]["bytes"] = entry_bytes
            builds[fmt]["bytes_per_image"] = entry_bytes / len(data.labels)
        clear_cache()
        raw = prepare(specs["raw"], SIZE, "stretch", torch.device("cpu"))
        jpeg = prepare(specs["jpeg"], SIZE, "stretch", torch.device("cpu"))
        every = torch.arange(len(raw.train_y))
        raw_pixels = raw.train_x[every].numpy()
        enc = encoding_table(raw_pixels[: min(len(raw_pixels), 400)])
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(raw.train_y), generator=g)
        batches = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]
        rates = decode_rates(raw.train_x, jpeg.train_x, batches)
        epochs = {"raw": epoch_rate(raw), "jpeg": epoch_rate(jpeg)}
        back = jpeg.train_x[every].numpy().astype(np.float64)
        mse = float(np.mean((back - raw_pixels) ** 2))
        library_psnr = 10 * math.log10(255**2 / mse)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    jpeg_rate = rates["JPEG cache, library path (decode_jpeg on a list)"]
    raw_rate = rates["raw map gather (library)"]
    kb = builds["jpeg"]["bytes_per_image"]
    study = {
        "images": STUDY_IMAGES, "size": SIZE,
        "raw_cache_gb": STUDY_IMAGES * 3 * SIZE * SIZE / 1e9,
        "jpeg_cache_gb": STUDY_IMAGES * kb / 1e9,
        "jpeg_decode_cpu_seconds_per_epoch": STUDY_IMAGES / jpeg_rate,
        "raw_gather_cpu_seconds_per_epoch": STUDY_IMAGES / raw_rate,
        "raw_read_gb_per_epoch": STUDY_IMAGES * 3 * SIZE * SIZE / 1e9,
        "jpeg_read_gb_per_epoch": STUDY_IMAGES * kb / 1e9,
    }
    print(f"{n} photos ({photos['bytes'] / n / 1e3:.0f} KB each as files), caches at {SIZE} px")
    print(table(["cache", "bytes per image", "build s (wall)", "images"],
                [(f, b["bytes_per_image"], b["seconds"], b["images"]) for f, b in builds.items()]))
    print(f"library JPEG cache (q90, 4:2:0) vs raw: PSNR {library_psnr:.1f} dB")
    print("\nJPEG size and fidelity at 224 px (first 400 training images)")
    print(table(["quality", "chroma", "bytes/image", "x smaller than raw", "PSNR dB"],
                [(r["quality"], r["chroma"], r["bytes_per_image"], r["x_smaller_than_raw"], r["psnr_db"]) for r in enc]))
    print(f"\nImages per CPU-second, one thread, batches of {BATCH}")
    print(table(["path", "images / CPU-s", "x raw gather"], [(k, v, v / raw_rate) for k, v in rates.items()]))
    print(table(["cache", "epoch through iterate_batches, images / CPU-s"], list(epochs.items())))
    print(f"\n10^6 images at {SIZE} px: raw cache {study['raw_cache_gb']:.0f} GB, JPEG cache {study['jpeg_cache_gb']:.1f} "
          f"GB; per epoch the JPEG path decodes for {study['jpeg_decode_cpu_seconds_per_epoch']:.0f} CPU-s "
          f"({study['jpeg_decode_cpu_seconds_per_epoch'] / 3600:.2f} core-hours), the raw path gathers for "
          f"{study['raw_gather_cpu_seconds_per_epoch']:.0f} CPU-s and reads {study['raw_read_gb_per_epoch']:.0f} GB")
    path = write_result(args.out, "large_photos", info, {
        "n": n, "size": SIZE, "batch": BATCH, "photo_files": photos, "builds": builds, "encoding": enc,
        "library_jpeg_psnr_db": library_psnr, "per_core_images_per_s": rates, "epoch_images_per_cpu_s": epochs,
        "study_1e6": study, "gpu_decode": "not yet measured on a GPU (benchmarks.gpu --all)"}, args.tiny)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
