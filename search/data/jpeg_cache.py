"""The compact cache for large photos: images resized once to the input size, re-encoded as JPEG.

At 224 px a decoded (raw) cache entry is 150 KB per image: 150 GB for 10^6 photos, more than a
page cache holds, so every epoch reads it from disk. Re-encoded at JPEG quality 90 the same
images take ~14 KB each (benchmarks/RESULTS.md section 7: 10.5x smaller), small enough to stay in
RAM, and decode at ~5,000 images per CPU-second (torchvision's ``decode_jpeg`` on a list): the
trade is a core's fraction per GPU against ten times the disk and I/O. ``dataset: {cache: jpeg}``
asks for it; ``cache: auto`` (the default) takes it when the raw entry would exceed half of the
machine's RAM (:func:`choose_format`).

One entry per (dataset fingerprint, size, aspect, quality, version) in the dataset's cache folder,
beside the raw entries and with the same guarantees (built once per machine under the folder's
lock by a process pool, written to temporary files and renamed, manifest last, size and sampled
CRC-32 checked on opening):

- ``<stem>.jpg.bin``: the JPEG files back to back;
- ``<stem>.meta.npz``: ``offsets`` (N+1 byte offsets) and the raw cache's per-image arrays;
- ``<stem>.json``: the manifest (``format: jpeg``, ``quality``, ``shape`` as decoded).

Decoding happens per batch, in the training loop's prefetch thread (:class:`JpegImages`); crops,
flips and the other augmentations run on the decoded batch, as for the raw cache. With CUDA the
training batches are decoded on the GPU (``decode_jpeg(..., device="cuda")``, nvJPEG, one call
per batch). This module imports only numpy and PIL at module level: the build's pool processes
import it to encode.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from search.data import cache
from search.data.decode import decode_fit, image_stats

log = logging.getLogger(__name__)

FORMATS = ("auto", "raw", "jpeg")
DEFAULT_QUALITY = 90
RAW_RAM_SHARE = 0.5  # auto: JPEG when the raw entry would take more than this share of the RAM
VERSION = 1


def ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def choose_format(wanted: str, n_images: int, size: int, ram: int | None = None) -> str:
    """``raw`` or ``jpeg`` for ``dataset.cache`` = ``wanted`` (``auto``: by the raw entry's size)."""
    if wanted != "auto":
        return wanted
    ram = ram_bytes() if ram is None else ram
    raw = n_images * 3 * size * size
    return "jpeg" if ram and raw > RAW_RAM_SHARE * ram else "raw"


# ----------------------------------------------------------------------------- encoding (pool side)


def encode(img: np.ndarray, quality: int) -> bytes:
    """A (3, S, S) uint8 image as JPEG bytes (4:2:0 chroma, PIL's default at these qualities)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode_job(job: tuple[Sequence[str], int, str, int]) -> list[tuple[bool, str, int, int, bool, int, bytes]]:
    """Decode, fit and re-encode ``files``: per file (ok, why, width, height, gray, digest, jpeg)."""
    files, size, aspect, quality = job
    out = []
    for f in files:
        img, why, (w, h) = decode_fit(f, size, aspect)
        if img is None:
            out.append((False, why, -1, -1, False, 0, b""))
            continue
        out.append((True, "", w, h, *image_stats(img), encode(img, quality)))
    return out


# ----------------------------------------------------------------------------- reading


class JpegImages:
    """The entry's images, decoded on indexing: ``x[i]`` (3, S, S), ``x[rows]`` (len(rows), 3, S, S).

    Quacks like the raw cache's uint8 tensor where :class:`search.data.datasets.MappedImages`
    reads it (``shape``, ``dtype``, ``device``, integer and index-tensor indexing).
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray, size: int) -> None:
        import torch

        self.data = data  # uint8 bytes, memory-mapped
        self.offsets = offsets
        self.size = size
        self.shape = torch.Size((len(offsets) - 1, 3, size, size))
        self.dtype = torch.uint8
        self.device = torch.device("cpu")
        self._mmap = getattr(data, "_mmap", None)  # for cache.MappedPages

    def __len__(self) -> int:
        return self.shape[0]

    def encoded(self, rows: Any) -> list[Any]:
        """The rows' JPEG bytes as uint8 tensors: views of the map, nothing copied."""
        import torch

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts, ends = self.offsets[rows].tolist(), self.offsets[rows + 1].tolist()
        return [torch.frombuffer(self.data, dtype=torch.uint8, count=e - s, offset=s) for s, e in zip(starts, ends)]

    def decode(self, rows: Any, device: Any = "cpu") -> Any:
        """uint8 (len(rows), 3, S, S) on ``device`` (CUDA: decoded there, one nvJPEG call)."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        blobs = self.encoded(rows)
        if not blobs:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8, device=device)
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work.
            warnings.simplefilter("ignore", DeprecationWarning)
            images = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
        return torch.stack(images)

    def __getitem__(self, key: Any) -> Any:
        import torch

        if isinstance(key, slice):
            return self.decode(range(*key.indices(len(self))))
        if isinstance(key, torch.Tensor) and key.ndim == 0 or isinstance(key, (int, np.integer)):
            return self.decode([int(key)])[0]
        return self.decode(key.cpu() if isinstance(key, torch.Tensor) else key)


@dataclass
class JpegEntry:
    images: JpegImages
    labels: np.ndarray
    parts: np.ndarray
    meta: dict[str, np.ndarray]
    manifest: dict[str, Any]
    path: Path
    built: bool

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])


def stem_for(source: cache.Source, size: int, aspect: str, quality: int) -> str:
    return f"s{int(size)}-{aspect}-jpeg{int(quality)}-v{VERSION}-{source.fingerprint[:16]}"


def open_entry(source: cache.Source, size: int | None, aspect: str, quality: int = DEFAULT_QUALITY,
               cache_dir: str | Path | None = None) -> JpegEntry:
    """The JPEG entry for ``source`` at ``size`` (None: native), building it once per machine."""
    d = cache.cache_root(cache_dir) / source.slug
    stem = None if size is None else stem_for(source, size, aspect, quality)
    if stem is not None:
        entry, problem = _load(d, stem, source)
        if entry is not None:
            return entry
    else:
        problem = None
    with cache.locked(d):
        if stem is None:
            native = cache.native_size(source, d)
            size = native if native is not None else int(source.generate(None, lambda nbytes: None)[0].shape[-1])
            stem = stem_for(source, size, aspect, quality)
        entry, again = _load(d, stem, source)
        if entry is not None:
            return entry
        problem = problem or again
        if problem:
            log.warning("dataset cache %s: %s; rebuilding it", d / f"{stem}.jpg.bin", problem)
        _build(source, stem, int(size), aspect, quality, d)  # type: ignore[arg-type]
        entry, problem = _load(d, stem, source)
        if entry is None:
            raise RuntimeError(f"dataset cache {d / stem}: unreadable right after building ({problem})")
        entry.built = True
        return entry


def _load(d: Path, stem: str, source: cache.Source) -> tuple[JpegEntry | None, str | None]:
    man_path, data_path, meta_path = d / f"{stem}.json", d / f"{stem}.jpg.bin", d / f"{stem}.meta.npz"
    if not man_path.exists():
        return None, None
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
        if man.get("format") != "jpeg" or man.get("version") != VERSION or man.get("fingerprint") != source.fingerprint:
            return None, "written for other files or another format version"
        actual = data_path.stat().st_size if data_path.exists() else 0
        if actual != man["bytes"]:
            return None, f"truncated or wrong size ({actual} of {man['bytes']} bytes)"
        if meta_path.stat().st_size != man["meta_bytes"] or cache.crc_file(meta_path) != man["meta_crc32"]:
            return None, "its label file is damaged"
        if cache.crc_sample(data_path) != man["sample_crc32"]:
            return None, "checksum mismatch (corrupted)"
        with np.load(meta_path, allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
        offsets = meta.pop("offsets")
        if len(offsets) != man["shape"][0] + 1 or int(offsets[-1]) != actual:
            return None, "its offsets do not match the data file"
        # Copy-on-write (as the raw cache's map; never written): torch.frombuffer needs a writable buffer.
        data = np.memmap(data_path, dtype=np.uint8, mode="c") if actual else np.zeros(0, np.uint8)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable ({exc})"
    images = JpegImages(data, offsets, int(man["size"]))
    return JpegEntry(images, meta.pop("labels"), meta.pop("parts"), meta, man, data_path, built=False), None


# ----------------------------------------------------------------------------- building


def _build(source: cache.Source, stem: str, size: int, aspect: str, quality: int, d: Path) -> None:
    start = time.perf_counter()
    pid = os.getpid()
    tmp = d / f"{stem}.jpg.bin.tmp-{pid}"
    skipped: list[tuple[str, str]] = []
    offsets = [0]
    with open(tmp, "wb") as out:
        if source.generate is not None:
            what = f"caching {source.label} at {size}px as JPEG q{quality}"
            # JPEG entries take about a tenth of the raw pixels (13.7 vs 150.5 KB an image, RESULTS 9b):
            # an eighth keeps the check on the safe side.
            images, labels, classes, parts = source.generate(size, lambda nbytes: cache.check_room(d, nbytes // 8, what))
            stats = []
            for img in images:
                blob = encode(img, quality)
                out.write(blob)
                offsets.append(offsets[-1] + len(blob))
                stats.append(image_stats(img))
            n = len(labels)
            meta = {"labels": np.asarray(labels, np.int64), "parts": np.asarray(parts, np.int8),
                    "width": np.full(n, images.shape[-1], np.int32), "height": np.full(n, images.shape[-2], np.int32),
                    "gray": np.asarray([g for g, _ in stats], bool), "digest": np.asarray([h for _, h in stats], np.int64)}
            uniform_square = True
        else:
            classes, files = source.classes, source.files
            jobs = [(chunk, size, aspect, quality) for chunk in cache.chunks(files)]
            rows = cache.run_jobs(encode_job, jobs, len(files), f"caching {source.label} at {size}px as JPEG q{quality}")
            for r in rows:
                if r[0]:
                    out.write(r[6])
                    offsets.append(offsets[-1] + len(r[6]))
            ok = np.asarray([r[0] for r in rows], bool)
            skipped = [(files[i], rows[i][1]) for i in np.flatnonzero(~ok).tolist()]
            for path, why in skipped[:20]:
                log.warning("skipping unreadable image %s: %s", path, why)
            keep = np.flatnonzero(ok)
            meta = {"labels": source.labels[keep], "parts": source.parts[keep],
                    "width": np.asarray([r[2] for r in rows], np.int32)[keep],
                    "height": np.asarray([r[3] for r in rows], np.int32)[keep],
                    "gray": np.asarray([r[4] for r in rows], bool)[keep],
                    "digest": np.asarray([r[5] for r in rows], np.int64)[keep]}
            sizes = {(int(w), int(h)) for w, h in zip(meta["width"], meta["height"])}
            uniform_square = len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1] == size
        out.flush()
        os.fsync(out.fileno())
    n = len(offsets) - 1
    meta["offsets"] = np.asarray(offsets, np.int64)
    meta_tmp = d / f"{stem}.meta.npz.tmp-{pid}"
    with open(meta_tmp, "wb") as fh:
        np.savez(fh, **meta)
    nbytes = tmp.stat().st_size
    crc, sample = cache.crc_file(tmp), cache.crc_sample(tmp)
    (d / f"{stem}.json").unlink(missing_ok=True)  # no manifest while the files change under it
    os.replace(tmp, d / f"{stem}.jpg.bin")
    os.replace(meta_tmp, d / f"{stem}.meta.npz")
    seconds = time.perf_counter() - start
    manifest = {
        "version": VERSION, "format": "jpeg", "quality": quality, "source": source.label, "kind": source.kind,
        "fingerprint": source.fingerprint, "shape": [n, 3, size, size], "dtype": "uint8", "size": size,
        "aspect": aspect, "classes": list(classes), "uniform_square": uniform_square, "bytes": nbytes,
        "crc32": crc, "sample_crc32": sample, "meta_bytes": (d / f"{stem}.meta.npz").stat().st_size,
        "meta_crc32": cache.crc_file(d / f"{stem}.meta.npz"), "n_files": len(source.files) or n,
        "skipped": len(skipped), "skipped_files": [list(s) for s in skipped[: cache.SKIPPED_LISTED]],
        "build_seconds": round(seconds, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
    }
    man_tmp = d / f"{stem}.json.tmp-{pid}"
    man_tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(man_tmp, d / f"{stem}.json")
    prefix = stem.rsplit("-", 1)[0] + "-"
    for old in d.iterdir():  # entries of an older file list at the same size, aspect and quality
        if old.name.startswith(prefix) and not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    log.info("dataset cache: %s at %s px as JPEG q%d built in %.1fs (%d images, %.1f MB, %.1f KB each) -> %s",
             source.label, size, quality, seconds, n, nbytes / 1e6, nbytes / max(1, n) / 1e3, d / f"{stem}.jpg.bin")
