"""The persistent dataset cache: decode once per machine, memory-map everywhere.

One entry per (dataset fingerprint, input size, aspect mode, format version), in
``<cache dir>/<dataset>/``:

- ``<stem>.npy``: uint8 images (N, 3, S, S), a plain NumPy file (``np.load(path, mmap_mode="r")``);
- ``<stem>.meta.npz``: per image ``labels``, ``parts`` (0 train, 1 val, 2 test, -1 unassigned),
  original ``width``/``height``, ``gray`` and a pixel ``digest`` (for the doctor's facts);
- ``<stem>.json``: the manifest (shape, classes, file-list fingerprint, byte sizes, checksums,
  skipped files, build time). It is written last: no manifest, no entry.

The fingerprint covers every file's relative path, label, split, size and mtime, and the decoding
settings, so an added, removed or edited image gives a new entry and nothing else does. Builds run
under an exclusive ``fcntl.flock`` (one builder; the others wait, then map the result), decode in a
process pool that writes straight into a ``*.tmp-<pid>`` file, and ``os.replace`` it when complete.
Opening checks the file size and a CRC-32 over 64 sampled 64 KiB blocks (first and last included);
``check`` (``strategy-search cache``) verifies the full-file CRC-32 computed at build time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import re
import shutil
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from search.data.decode import decode_job, headers_job, image_stats
from search.core.progress import progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "STRATEGY_SEARCH_CACHE"
DEFAULT_SIZE = 64  # input size when none is set and the images are not all one square size
POOL_MIN_FILES = 512  # fewer files decode in this process: starting a pool costs more than it saves
CHUNK = 64  # files per decoding job
SAMPLE_BLOCKS = 64
BLOCK = 1 << 16
COPY_ROWS = 4096
SKIPPED_LISTED = 100  # skipped files named in the manifest (all are counted)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$STRATEGY_SEARCH_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``/strategy-search/data."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "strategy-search" / "data"


@dataclass
class Source:
    """What a dataset consists of, from a scan of names and file stats (no pixels)."""

    kind: str  # builtin | folder | csv
    label: str
    slug: str  # the dataset's folder name in the cache
    fingerprint: str
    classes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    parts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    max_side: int = 256
    # Built-ins: size (None = native) -> (uint8 images (N, 3, S, S), int64 labels, classes).
    generate: Callable[[int | None], tuple[np.ndarray, np.ndarray, list[str]]] | None = None


class MappedPages:
    """Keeps a worker's resident share of a memory-mapped cache file bounded, whatever its size.

    Every ``budget`` bytes gathered from the map (small: the kernel maps the neighbours of each
    faulting page that are in the page cache too, ~5x the bytes read), the process drops its pages
    (``madvise(MADV_DONTNEED)``): the data stays in the page cache, shared with the other workers,
    and the next read of a page is a minor fault. Without it a worker's RSS grows by the whole
    file over an epoch (a 10^6-image set at 64 px: 12 GB per worker in ``ps``, though shared).
    Never written to (the map is copy-on-write and read only), so nothing is lost by dropping.
    """

    BUDGET = 32 << 20

    def __init__(self, array: Any, budget: int = BUDGET) -> None:
        self._mmap = getattr(array, "_mmap", None) if hasattr(mmap, "MADV_DONTNEED") else None
        self.budget = budget
        self._read = 0
        self._lock = threading.Lock()

    def read(self, nbytes: int) -> None:
        """Count ``nbytes`` just gathered; drop the process's pages when the budget is used."""
        if self._mmap is None:
            return
        with self._lock:
            self._read += nbytes
            if self._read < self.budget:
                return
            self._read = 0
        self._mmap.madvise(mmap.MADV_DONTNEED)


@dataclass
class Entry:
    """One opened cache entry: the images memory-mapped, everything else small."""

    images: np.ndarray  # (N, 3, S, S) uint8, a copy-on-write map of the file (never written)
    labels: np.ndarray
    parts: np.ndarray
    meta: dict[str, np.ndarray]
    manifest: dict[str, Any]
    path: Path
    built: bool  # this call built it (False: it was already there)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def size(self) -> int:
        return int(self.manifest["shape"][-1])


def fingerprint(parts: list[str], files: list[str] | None = None, labels: Any = None, split: Any = None,
                root: str | None = None) -> str:
    """SHA-256 over the settings and, per file, its relative path, label, split, size and mtime."""
    h = hashlib.sha256("\0".join([f"v{FORMAT_VERSION}", *parts]).encode())
    prefix = os.path.join(root, "") if root else ""
    for i, f in enumerate(files or []):
        st = os.stat(f)
        # A plain prefix cut where it applies: os.path.relpath costs 25 us a file (2.5 s at 100k).
        rel = f[len(prefix):] if prefix and f.startswith(prefix) else (os.path.relpath(f, root) if root else f)
        h.update(f"\n{rel}\0{labels[i]}\0{split[i]}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def slug_for(name: str, where: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"
    return f"{clean[:40]}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


# ----------------------------------------------------------------------------- opening


def open_entry(source: Source, size: int | None, aspect: str, cache_dir: str | Path | None = None,
               full_check: bool = False) -> Entry:
    """The entry for ``source`` at ``size`` (None: native), building it (once per machine) if needed."""
    d = cache_root(cache_dir) / source.slug
    stem = _stem(source, size, aspect, d) if size is not None or source.kind == "builtin" else None
    if stem is not None:
        entry, problem = _load(d, stem, source, full_check)
        if entry is not None:
            return entry
    else:
        problem = None
    with _locked(d):
        if stem is None:
            stem = _stem(source, _native_size(source, d), aspect, d)
        entry, again = _load(d, stem, source, full_check)
        if entry is not None:
            return entry  # another process built it while we waited for the lock
        problem = problem or again
        if problem:
            log.warning("dataset cache %s: %s; rebuilding it", d / f"{stem}.npy", problem)
        _build(source, stem, aspect, d)
        entry, problem = _load(d, stem, source, full_check=False)
        if entry is None:
            raise RuntimeError(f"dataset cache {d / stem}: unreadable right after building ({problem})")
        entry.built = True
        return entry


def _stem(source: Source, size: int | None, aspect: str, d: Path) -> str:
    s = "native" if size is None else f"s{int(size)}"
    return f"{s}-{aspect}-v{FORMAT_VERSION}-{source.fingerprint[:16]}"


def _load(d: Path, stem: str, source: Source, full_check: bool) -> tuple[Entry | None, str | None]:
    """(entry, None) when valid; (None, why) when present but unusable; (None, None) when absent."""
    man_path, npy, meta_path = d / f"{stem}.json", d / f"{stem}.npy", d / f"{stem}.meta.npz"
    if not man_path.exists():
        return None, None
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
        if man.get("version") != FORMAT_VERSION or man.get("fingerprint") != source.fingerprint:
            return None, "written for other files or another format version"
        actual = npy.stat().st_size if npy.exists() else 0
        if actual != man["bytes"]:
            return None, f"truncated or wrong size ({actual} of {man['bytes']} bytes)"
        if meta_path.stat().st_size != man["meta_bytes"] or _crc_file(meta_path) != man["meta_crc32"]:
            return None, "its label file is damaged"
        if (_crc_file(npy) if full_check else _crc_sample(npy)) != man["crc32" if full_check else "sample_crc32"]:
            return None, "checksum mismatch (corrupted)"
        images = np.load(npy, mmap_mode="c")
        if list(images.shape) != man["shape"] or images.dtype != np.uint8:
            return None, f"shape {images.shape} differs from its manifest {man['shape']}"
        with np.load(meta_path, allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable ({exc})"
    return Entry(images, meta.pop("labels"), meta.pop("parts"), meta, man, npy, built=False), None


@contextmanager
def _locked(d: Path) -> Iterator[None]:
    """An exclusive lock on the dataset's cache folder (released by the OS if the holder dies)."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish building the dataset cache in %s", d)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- building


def _pool(n_files: int) -> ProcessPoolExecutor | None:
    cores = os.cpu_count() or 1
    if n_files < POOL_MIN_FILES or cores < 2:
        return None
    # spawn: the workers import only numpy and PIL (search.data.decode), never torch's threads.
    return ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("spawn"))


def _run(fn: Callable[[Any], list], jobs: list, n_files: int, desc: str) -> list:
    pool = _pool(n_files)
    try:
        results = pool.map(fn, jobs) if pool else map(fn, jobs)
        out: list = []
        for chunk in progress(results, total=len(jobs), desc=desc, unit="chunk"):
            out.extend(chunk)
        return out
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _chunks(files: list[str]) -> list[list[str]]:
    return [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]


def _native_size(source: Source, d: Path) -> int | None:
    """Builtins: None (their own size). Files: their common square side (capped) or DEFAULT_SIZE."""
    if source.kind == "builtin":
        return None
    side = _square_side(source, d)
    return DEFAULT_SIZE if side is None else min(side, source.max_side)


def square_side(source: Source, cache_dir: str | Path | None = None) -> int | None:
    """The files' common square side before caching, None when they differ: from their headers
    (read once per machine and kept beside the cache entries), no pixels decoded."""
    d = cache_root(cache_dir) / source.slug
    d.mkdir(parents=True, exist_ok=True)
    return _square_side(source, d)  # no lock needed: the headers file is replaced atomically


def _square_side(source: Source, d: Path) -> int | None:
    path = d / f"headers-{source.fingerprint[:16]}.npy"
    try:
        sizes = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        rows = _run(headers_job, _chunks(source.files), len(source.files), f"reading {source.label} headers")
        sizes = np.asarray([(w, h) for w, h, _ in rows], dtype=np.int32).reshape(-1, 2)
        tmp = d / f"{path.name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.save(fh, sizes)
        os.replace(tmp, path)
    good = {tuple(s) for s in sizes.tolist() if s[0] > 0}
    if len(good) == 1:
        (w, h), = good
        if w == h:
            return int(w)
    return None


def _build(source: Source, stem: str, aspect: str, d: Path) -> None:
    """Decode everything into ``<stem>.npy`` atomically (caller holds the lock)."""
    start = time.perf_counter()
    for stale in d.glob("*.tmp-*"):  # a killed build's leftovers: nobody else builds while we hold the lock
        stale.unlink(missing_ok=True)
    (d / f"{stem}.json").unlink(missing_ok=True)  # no manifest while the files change under it
    tmp = d / f"{stem}.npy.tmp-{os.getpid()}"
    skipped: list[tuple[str, str]] = []
    size = int(stem.split("-")[0][1:]) if stem[0] == "s" else None
    uniform_square = False
    if source.generate is not None:
        images, labels, classes = source.generate(size)
        size = int(images.shape[-1])
        uniform_square = True
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(images, dtype=np.uint8))
        stats = [image_stats(img) for img in images]
        meta = {
            "labels": np.asarray(labels, np.int64), "parts": np.zeros(len(labels), np.int8),
            "width": np.full(len(labels), images.shape[-1], np.int32),
            "height": np.full(len(labels), images.shape[-2], np.int32),
            "gray": np.asarray([g for g, _ in stats], bool), "digest": np.asarray([h for _, h in stats], np.int64),
        }
    else:
        assert size is not None
        classes, files = source.classes, source.files
        n = len(files)
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size)).flush()
        jobs = [(str(tmp), i * CHUNK, chunk, size, aspect) for i, chunk in enumerate(_chunks(files))]
        rows = _run(decode_job, jobs, n, f"caching {source.label} at {size}px")
        ok = np.asarray([r[0] for r in rows], bool)
        skipped = [(files[i], rows[i][1]) for i in np.flatnonzero(~ok).tolist()]
        for path, why in skipped[:20]:
            log.warning("skipping unreadable image %s: %s", path, why)
        if skipped:
            log.warning("%s: skipped %d unreadable image(s)", source.label, len(skipped))
            tmp = _compact(tmp, ok, size)
        keep = np.flatnonzero(ok)
        meta = {
            "labels": source.labels[keep], "parts": source.parts[keep],
            "width": np.asarray([r[2] for r in rows], np.int32)[keep],
            "height": np.asarray([r[3] for r in rows], np.int32)[keep],
            "gray": np.asarray([r[4] for r in rows], bool)[keep],
            "digest": np.asarray([r[5] for r in rows], np.int64)[keep],
        }
        sizes = {(int(w), int(h)) for w, h in zip(meta["width"], meta["height"])}
        uniform_square = len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1] == size
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    crc, sample = _crc_file(tmp), _crc_sample(tmp)
    nbytes = tmp.stat().st_size
    shape = list(np.load(tmp, mmap_mode="r").shape)
    os.replace(tmp, d / f"{stem}.npy")
    meta_tmp = d / f"{stem}.meta.npz.tmp-{os.getpid()}"
    with open(meta_tmp, "wb") as fh:
        np.savez(fh, **meta)
    os.replace(meta_tmp, d / f"{stem}.meta.npz")
    seconds = time.perf_counter() - start
    manifest = {
        "version": FORMAT_VERSION, "source": source.label, "kind": source.kind, "fingerprint": source.fingerprint,
        "shape": shape, "dtype": "uint8", "size": size, "aspect": aspect, "classes": list(classes),
        "uniform_square": uniform_square, "bytes": nbytes, "crc32": crc, "sample_crc32": sample,
        "meta_bytes": (d / f"{stem}.meta.npz").stat().st_size, "meta_crc32": _crc_file(d / f"{stem}.meta.npz"),
        "n_files": len(source.files) if source.generate is None else shape[0],
        "skipped": len(skipped), "skipped_files": [list(s) for s in skipped[:SKIPPED_LISTED]],
        "build_seconds": round(seconds, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
    }
    man_tmp = d / f"{stem}.json.tmp-{os.getpid()}"
    man_tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(man_tmp, d / f"{stem}.json")
    prefix = stem.rsplit("-", 1)[0] + "-"
    for old in d.iterdir():  # entries for an older file list at the same size and aspect
        if old.name.startswith(prefix) and not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    for old in d.glob("headers-*.npy"):
        if not old.name.startswith(f"headers-{source.fingerprint[:16]}"):
            old.unlink(missing_ok=True)
    log.info("dataset cache: %s at %s px built in %.1fs (%d images, %.1f MB, %d skipped) -> %s", source.label,
             shape[-1], seconds, shape[0], nbytes / 1e6, len(skipped), d / f"{stem}.npy")


def _compact(tmp: Path, ok: np.ndarray, size: int) -> Path:
    """Drop the rows of unreadable files (a second file, written in chunks)."""
    keep = np.flatnonzero(ok)
    src = np.load(tmp, mmap_mode="r")
    out_path = tmp.with_name(tmp.name + "c")
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(keep), 3, size, size))
    for i in range(0, len(keep), COPY_ROWS):
        out[i : i + COPY_ROWS] = src[keep[i : i + COPY_ROWS]]
    out.flush()
    del out, src
    tmp.unlink()
    return out_path


def _crc_file(path: Path, chunk: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def _crc_sample(path: Path) -> int:
    """CRC-32 of SAMPLE_BLOCKS blocks spread evenly over the file, first and last included."""
    size = path.stat().st_size
    crc = zlib.crc32(str(size).encode())
    with open(path, "rb") as fh:
        fd = fh.fileno()
        span = max(0, size - BLOCK)
        for i in range(SAMPLE_BLOCKS):
            crc = zlib.crc32(os.pread(fd, BLOCK, span * i // (SAMPLE_BLOCKS - 1)), crc)
    return crc


# ----------------------------------------------------------------------------- listing and clearing


def list_entries(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per dataset folder: its source, entries (size, aspect, images) and bytes on disk."""
    root = cache_root(cache_dir)
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        entries, source = [], None
        for man_path in sorted(d.glob("*.json")):
            try:
                man = json.loads(man_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            source = man.get("source", source)
            entries.append({"size": man.get("size"), "aspect": man.get("aspect"), "images": man["shape"][0],
                            "skipped": man.get("skipped", 0), "bytes": man.get("bytes", 0)})
        nbytes = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        out.append({"dataset": source or d.name, "folder": str(d), "entries": entries, "bytes": nbytes})
    return out


def clear(cache_dir: str | Path | None = None, slug: str | None = None) -> int:
    """Delete every dataset's entries (or one dataset's); returns the bytes freed."""
    root = cache_root(cache_dir)
    targets = [root / slug] if slug else ([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
    freed = 0
    for d in targets:
        if not d.is_dir():
            continue
        with _locked(d):  # never pull files from under a build in progress
            freed += sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            for f in d.iterdir():
                if f.name != ".lock":
                    shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)
    return freed
