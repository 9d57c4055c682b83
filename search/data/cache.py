"""The persistent dataset cache: decode once per machine, memory-map everywhere.

One entry per (dataset fingerprint, input size, aspect mode, format version), in
``<cache dir>/<dataset>/``:

- ``<stem>.npy``: uint8 images (N, 3, S, S), a plain NumPy file (``np.load(path, mmap_mode="r")``);
- ``<stem>.meta.npz``: per image ``labels``, ``parts`` (0 train, 1 val, 2 test, -1 unassigned),
  original ``width``/``height``, ``gray``, a pixel ``digest`` (the doctor's facts, ``verify``) and
  its ``source_index`` (the file it came from);
- ``<stem>.json``: the manifest (shape, classes, file-list fingerprint, byte sizes, checksums,
  skipped files, build time). It is written last: no manifest, no entry.

Each dataset folder holds a ``.strategy-search-cache`` marker: listing and clearing look only at
such folders (or, for folders made before the marker, ones holding a manifest), never follow
links, and delete only regular files named as the cache names them.

The fingerprint covers every file's relative path, label, split, size and mtime, and the decoding
settings, so an added, removed or edited image gives a new entry and nothing else does. Builds run
under an exclusive ``fcntl.flock`` (one builder; the others wait, then map the result), decode in a
process pool that writes straight into a ``*.tmp-<pid>`` file, and ``os.replace`` it when complete.
Opening checks the file size and a CRC-32 over 64 sampled 64 KiB blocks (first and last included);
``check`` (``strategy-search cache``) verifies the full-file CRC-32 computed at build time, and
:func:`verify` (``cache --verify``) decodes every image again against its recorded digest. A build
checks the free space first and allocates the file's blocks before writing it, so a full disk is
an error rather than a SIGBUS, and a failed build removes its temporary files.
"""

from __future__ import annotations

import contextlib
import errno
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
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from search.data.decode import decode_job, digest_job, headers_job, image_stats
from search.core.errors import DataError
from search.core.progress import progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "STRATEGY_SEARCH_CACHE"
DEFAULT_SIZE = 64  # input size when none is set and the images are not all one square size
MIN_SIZE = 4  # the smallest input size (input_size's lower bound in search.strategies.input)
POOL_MIN_FILES = 512  # fewer files decode in this process: starting a pool costs more than it saves
CHUNK = 64  # files per decoding job
SAMPLE_BLOCKS = 64
BLOCK = 1 << 16
COPY_ROWS = 4096
SKIPPED_LISTED = 100  # skipped files named in the manifest (all are counted)
# Every dataset folder the cache makes holds this file: listing and clearing touch only such folders.
MARKER_FILE = ".strategy-search-cache"
LOCK_FILE = ".lock"
# The names of the files the cache writes (entries, headers, and their temporary names while written):
# clearing deletes regular files with these names only.
# Raw entries (``s64-stretch-v1-<fp>.npy``), JPEG entries (``s224-stretch-jpeg90-v1-<fp>.jpg.bin``, see
# search.data.jpeg_cache), their meta and manifest files, header scans, and their temporaries.
OWN_FILE = re.compile(r"(?:(?:s\d+|native)-(?:stretch|pad)(?:-l\d+)?(?:-jpeg\d+)?-v\d+-[0-9a-f]{16}"
                      r"(?:\.npy|\.jpg\.bin|\.meta\.npz|\.json)"
                      r"|headers-[0-9a-f]{16}\.npy)(?:\.tmp-\d+c?)?")
FREE_MARGIN = 1 << 20  # bytes a build leaves free on the cache's disk (beside its small label and manifest files)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$STRATEGY_SEARCH_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``/strategy-search/data."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "strategy-search" / "data"


def checked_root(cache_dir: str | Path | None = None) -> Path:
    """:func:`cache_root`, refused (one line) when it names a file rather than a folder."""
    root = cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        given = "--cache-dir" if cache_dir else (f"${CACHE_ENV} (or --cache-dir)" if os.environ.get(CACHE_ENV)
                                                 else "the default cache folder")
        raise DataError(f"dataset cache {root} is a file, not a folder; point {given} at a folder")
    return root


def _write_error(d: Path, exc: OSError) -> DataError:
    """A failed write in the cache folder ``d`` as one line that says what to do."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"dataset cache {d}: the disk is full ({why}); free some space or give a folder on "
                         "another disk with --cache-dir DIR (or $STRATEGY_SEARCH_CACHE)")
    return DataError(f"dataset cache {d}: cannot write there ({why}); give a writable folder with --cache-dir DIR "
                     "(or $STRATEGY_SEARCH_CACHE)")


def free_bytes(folder: Path) -> int:
    """Bytes free for us on ``folder``'s file system (its nearest existing parent's)."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_room(folder: Path, nbytes: int, what: str) -> None:
    """Refuse (one line, before anything is written) a build of ``nbytes`` that would fill the disk."""
    free = free_bytes(folder)
    if nbytes + FREE_MARGIN > free:
        raise DataError(f"dataset cache {folder}: {what} needs {nbytes / 1e6:.1f} MB but only {free / 1e6:.1f} MB "
                        "are free there; free some space, or give a folder on a larger disk with --cache-dir DIR "
                        "(or $STRATEGY_SEARCH_CACHE), or a smaller input size")


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse an in-memory step of ``nbytes`` that this machine's free RAM cannot hold."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(f"{what} needs about {nbytes / 1e9:.1f} GB of memory but only {free / 1e9:.1f} GB are "
                        "available; use a smaller input size")


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
    limit: int | None = None  # ``dataset.limit``: the files are already the subsample (its entries are apart)
    # Built-ins: (size (None = native), a check of the bytes it will write) -> (uint8 images (N, 3, S, S),
    # int64 labels, classes, int8 parts).
    generate: Callable[[int | None, Callable[[int], None]], tuple[np.ndarray, np.ndarray, list[str], np.ndarray]] \
        | None = None


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
        # The mapped file stays open: a read past its end (it was truncated under us) would kill the
        # process with SIGBUS, so every gather first checks that the file still has its full size.
        self._fd: int | None = None
        self._size = 0
        filename = getattr(array, "filename", None)
        if filename is not None:
            with contextlib.suppress(OSError):
                self._fd = os.open(filename, os.O_RDONLY)
                self._size = int(getattr(array, "offset", 0)) + int(array.nbytes)
                self._filename = str(filename)

    def check(self) -> None:
        """Raise (instead of SIGBUS) when the mapped file is shorter than the map: truncated while in use."""
        if self._fd is None:
            return
        size = os.fstat(self._fd).st_size
        if size < self._size:
            raise DataError(f"dataset cache {self._filename} was truncated while in use ({size} of {self._size} "
                            "bytes); it is rebuilt when the next process opens it")

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # type: ignore[arg-type]

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
        try:
            st = os.stat(f)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # a dangling or looping link: counted as unreadable when the entry is built
            size, mtime = -1, -1
        # A plain prefix cut where it applies: os.path.relpath costs 25 us a file (2.5 s at 100k).
        rel = f[len(prefix):] if prefix and f.startswith(prefix) else (os.path.relpath(f, root) if root else f)
        h.update(f"\n{rel}\0{labels[i]}\0{split[i]}\0{size}\0{mtime}".encode())
    return h.hexdigest()


def slug_for(name: str, where: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"
    return f"{clean[:40]}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


# ----------------------------------------------------------------------------- opening


def open_entry(source: Source, size: int | None, aspect: str, cache_dir: str | Path | None = None,
               full_check: bool = False) -> Entry:
    """The entry for ``source`` at ``size`` (None: native), building it (once per machine) if needed.

    A folder that cannot be written (read-only, full disk) is a :class:`DataError` naming it;
    a build that fails leaves no temporary file behind.
    """
    d = checked_root(cache_dir) / source.slug
    stem = _stem(source, size, aspect, d) if size is not None or source.kind == "builtin" else None
    if stem is not None:
        entry, problem = _load(d, stem, source, full_check)
        if entry is not None:
            return entry
    else:
        problem = None
    try:
        return _open_locked(source, size, aspect, d, stem, problem, full_check)
    except OSError as exc:
        raise _write_error(d, exc) from None


def _open_locked(source: Source, size: int | None, aspect: str, d: Path, stem: str | None, problem: str | None,
                 full_check: bool) -> Entry:
    with locked(d):
        if stem is None:
            stem = _stem(source, native_size(source, d), aspect, d)
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
    limited = f"-l{source.limit}" if source.limit else ""  # a subsample never replaces the full set's entry
    return f"{s}-{aspect}{limited}-v{FORMAT_VERSION}-{source.fingerprint[:16]}"


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
        if meta_path.stat().st_size != man["meta_bytes"] or crc_file(meta_path) != man["meta_crc32"]:
            return None, "its label file is damaged"
        if (crc_file(npy) if full_check else crc_sample(npy)) != man["crc32" if full_check else "sample_crc32"]:
            return None, "checksum mismatch (corrupted)"
        images = np.load(npy, mmap_mode="c")
        if list(images.shape) != man["shape"] or images.dtype != np.uint8:
            return None, f"shape {images.shape} differs from its manifest {man['shape']}"
        with np.load(meta_path, allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable ({exc})"
    return Entry(images, meta.pop("labels"), meta.pop("parts"), meta, man, npy, built=False), None


def _make_dir(d: Path) -> None:
    """The dataset's cache folder, with the marker that makes it the cache's (for listing and clearing)."""
    d.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(d / MARKER_FILE):
        # (A folder that cannot take it cannot take a build either: that write says why.)
        with contextlib.suppress(OSError):
            (d / MARKER_FILE).write_text("a dataset folder of the strategy-search cache: "
                                         "`strategy-search cache --clear` deletes its entries\n", encoding="utf-8")


@contextmanager
def locked(d: Path) -> Iterator[None]:
    """An exclusive lock on the dataset's cache folder (released by the OS if the holder dies)."""
    _make_dir(d)
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a link
    with os.fdopen(fd, "a+") as fh:
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


def run_jobs(fn: Callable[[Any], list], jobs: list, n_files: int, desc: str) -> list:
    pool = _pool(n_files)
    try:
        results = pool.map(fn, jobs) if pool else map(fn, jobs)
        out: list = []
        for chunk in progress(results, total=len(jobs), desc=desc, unit="chunk"):
            out.extend(chunk)
        return out
    except BrokenProcessPool:
        raise DataError(f"{desc}: a decoding process died (killed, e.g. out of memory); nothing was kept, "
                        "run the command again") from None
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def chunks(files: list[str]) -> list[list[str]]:
    return [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]


def native_size(source: Source, d: Path) -> int | None:
    """Builtins: None (their own size). Files: their common square side (capped) or DEFAULT_SIZE."""
    if source.kind == "builtin":
        return None
    side = _square_side(source, d)
    if side is not None and side < MIN_SIZE:
        log.warning("%s: the images are %dx%d px, below the smallest input size (%d px): they are enlarged to "
                    "%d px; such images hold almost nothing to learn from", source.label, side, side, MIN_SIZE,
                    MIN_SIZE)
        return MIN_SIZE
    return DEFAULT_SIZE if side is None else min(side, source.max_side)


def square_side(source: Source, cache_dir: str | Path | None = None) -> int | None:
    """The files' common square side before caching, None when they differ: from their headers
    (read once per machine and kept beside the cache entries), no pixels decoded."""
    d = checked_root(cache_dir) / source.slug
    try:
        _make_dir(d)
        return _square_side(source, d)  # no lock needed: the headers file is replaced atomically
    except OSError as exc:
        raise _write_error(d, exc) from None


def _square_side(source: Source, d: Path) -> int | None:
    path = d / f"headers-{source.fingerprint[:16]}.npy"
    try:
        sizes = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        rows = run_jobs(headers_job, chunks(source.files), len(source.files), f"reading {source.label} headers")
        sizes = np.asarray([(w, h) for w, h, _ in rows], dtype=np.int32).reshape(-1, 2)
        tmp = d / f"{path.name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, sizes)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    good = {tuple(s) for s in sizes.tolist() if s[0] > 0}
    if len(good) == 1:
        (w, h), = good
        if w == h:
            return int(w)
    return None


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate ``path``'s blocks now: a full disk is an ENOSPC error here, never a SIGBUS while the
    memory-mapped file is written (tmpfs and sparse files allocate on first write)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _build(source: Source, stem: str, aspect: str, d: Path) -> None:
    """Decode everything into ``<stem>.npy`` atomically (caller holds the lock); a build that fails
    (full disk, read-only folder, a killed decoding process) leaves no temporary file behind."""
    for stale in d.glob("*.tmp-*"):  # a killed build's leftovers: nobody else builds while we hold the lock
        if OWN_FILE.fullmatch(stale.name):
            stale.unlink(missing_ok=True)
    try:
        _build_files(source, stem, aspect, d)
    except BaseException:
        mine = re.compile(rf".*\.tmp-{os.getpid()}c?")  # this process's temporaries only
        for tmp in d.glob("*.tmp-*"):
            if mine.fullmatch(tmp.name):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        raise


def _build_files(source: Source, stem: str, aspect: str, d: Path) -> None:
    start = time.perf_counter()
    (d / f"{stem}.json").unlink(missing_ok=True)  # no manifest while the files change under it
    tmp = d / f"{stem}.npy.tmp-{os.getpid()}"
    skipped: list[tuple[str, str]] = []
    size = int(stem.split("-")[0][1:]) if stem[0] == "s" else None
    uniform_square = False
    if source.generate is not None:
        what = f"caching {source.label}" + (f" at {size}px" if size else "")
        images, labels, classes, parts = source.generate(size, lambda nbytes: check_room(d, nbytes, what))
        size = int(images.shape[-1])
        uniform_square = True
        check_room(d, images.nbytes + 64 * len(labels), f"caching {source.label} at {size}px")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(images, dtype=np.uint8))
        stats = [image_stats(img) for img in images]
        meta = {
            "labels": np.asarray(labels, np.int64), "parts": np.asarray(parts, np.int8),
            "width": np.full(len(labels), images.shape[-1], np.int32),
            "height": np.full(len(labels), images.shape[-2], np.int32),
            "gray": np.asarray([g for g, _ in stats], bool), "digest": np.asarray([h for _, h in stats], np.int64),
        }
    else:
        assert size is not None
        classes, files = source.classes, source.files
        n = len(files)
        check_room(d, n * 3 * size * size + 64 * n, f"caching {n} images of {source.label} at {size}px")
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size)).flush()
        _reserve(tmp, tmp.stat().st_size)
        jobs = [(str(tmp), i * CHUNK, chunk, size, aspect) for i, chunk in enumerate(chunks(files))]
        rows = run_jobs(decode_job, jobs, n, f"caching {source.label} at {size}px")
        ok = np.asarray([r[0] for r in rows], bool)
        skipped = [(files[i], rows[i][1]) for i in np.flatnonzero(~ok).tolist()]
        for path, why in skipped[:20]:
            log.warning("skipping unreadable image %s: %s", path, why)
        if skipped:
            log.warning("%s: skipped %d unreadable image(s)", source.label, len(skipped))
            tmp = _compact(tmp, ok, size)
        keep = np.flatnonzero(ok)
        meta = {
            "labels": source.labels[keep], "parts": source.parts[keep], "source_index": keep.astype(np.int64),
            "width": np.asarray([r[2] for r in rows], np.int32)[keep],
            "height": np.asarray([r[3] for r in rows], np.int32)[keep],
            "gray": np.asarray([r[4] for r in rows], bool)[keep],
            "digest": np.asarray([r[5] for r in rows], np.int64)[keep],
        }
        sizes = {(int(w), int(h)) for w, h in zip(meta["width"], meta["height"])}
        uniform_square = len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1] == size
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    crc, sample = crc_file(tmp), crc_sample(tmp)
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
        "meta_bytes": (d / f"{stem}.meta.npz").stat().st_size, "meta_crc32": crc_file(d / f"{stem}.meta.npz"),
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


def _file_rows(entry: Entry, n_files: int) -> np.ndarray | None:
    """Per source file, its row in the entry (-1: skipped as unreadable); None when unknown."""
    rows = np.full(n_files, -1, np.int64)
    if "source_index" in entry.meta:
        rows[entry.meta["source_index"]] = np.arange(len(entry.meta["source_index"]))
        return rows
    if int(entry.manifest.get("skipped", 0)) == 0 and len(entry.labels) == n_files:
        return np.arange(n_files)
    return None  # an entry of an older build with skipped files: which row is which is not recorded


def verify(entry: Entry, source: Source) -> list[str]:
    """The files whose pixels are not what the entry holds: every file is decoded again and its pixel
    digest compared with the one recorded at build time. The start-up check compares sizes and
    mtimes only, which ``cp -p``, ``rsync -a`` or ``tar`` restore after the content changed."""
    if source.generate is not None:
        return []  # generated in this package: nothing on disk to change
    files = source.files
    rows = _file_rows(entry, len(files))
    if rows is None:
        return list(files)
    jobs = [(chunk, entry.size, str(entry.manifest.get("aspect", "stretch"))) for chunk in chunks(files)]
    digests = np.asarray(run_jobs(digest_job, jobs, len(files), f"verifying {source.label}"), np.int64)
    stored = np.where(rows >= 0, entry.meta["digest"][np.maximum(rows, 0)], -1)
    return [files[i] for i in np.flatnonzero(digests != stored).tolist()]


def discard(entry: Entry) -> None:
    """Make ``entry`` invalid (its manifest goes first), so the next open rebuilds it."""
    d = entry.path.parent
    try:
        with locked(d):
            entry.path.with_suffix(".json").unlink(missing_ok=True)
    except OSError as exc:
        raise _write_error(d, exc) from None


def _compact(tmp: Path, ok: np.ndarray, size: int) -> Path:
    """Drop the rows of unreadable files (a second file, written in chunks)."""
    keep = np.flatnonzero(ok)
    src = np.load(tmp, mmap_mode="r")
    out_path = tmp.with_name(tmp.name + "c")
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(keep), 3, size, size))
    _reserve(out_path, out_path.stat().st_size)
    for i in range(0, len(keep), COPY_ROWS):
        out[i : i + COPY_ROWS] = src[keep[i : i + COPY_ROWS]]
    out.flush()
    del out, src
    tmp.unlink()
    return out_path


def crc_file(path: Path, chunk: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def crc_sample(path: Path) -> int:
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


def _own_files(d: Path) -> list[os.DirEntry]:
    """The regular files in ``d`` that the cache wrote (by name; links and folders never count)."""
    with os.scandir(d) as it:
        return [e for e in it if e.is_file(follow_symlinks=False) and (OWN_FILE.fullmatch(e.name) or e.name in
                                                                        (LOCK_FILE, MARKER_FILE))]


def _manifest(path: Path | os.DirEntry) -> dict[str, Any] | None:
    """A manifest the cache wrote (a JSON object with its version, fingerprint and shape), else None."""
    try:
        with open(path, encoding="utf-8") as fh:
            man = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(man, dict) or not isinstance(man.get("fingerprint"), str) or "version" not in man:
        return None
    shape = man.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(n, int) and n >= 0 for n in shape):
        return None
    return man


def _owned(d: Path) -> bool:
    """Whether ``d`` is a dataset folder the cache made: a real folder (never a link) holding the
    cache's marker file, or (folders made before the marker) one of its manifests."""
    if d.is_symlink() or not d.is_dir():
        return False
    try:
        files = _own_files(d)
    except OSError:
        return False
    if any(e.name == MARKER_FILE for e in files):
        return True
    return any(e.name.endswith(".json") and _manifest(e) is not None for e in files)


def _folders(root: Path, slug: str | None) -> tuple[list[Path], list[Path]]:
    """(the cache's dataset folders, other entries left alone) under ``root`` (all, or ``slug``'s)."""
    if slug is not None:
        found = [root / slug] if os.path.lexists(root / slug) else []
    elif root.is_dir():
        found = sorted(root.iterdir())
    else:
        found = []
    ours = [d for d in found if _owned(d)]
    return ours, [d for d in found if d not in ours]


def list_entries(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per dataset folder of the cache: its source, entries (size, aspect, images) and bytes on disk.

    Only folders the cache made are listed (see :func:`clear`); links are never followed.
    """
    root = checked_root(cache_dir)
    out = []
    for d in _folders(root, None)[0]:
        entries, source = [], None
        files = _own_files(d)
        for f in sorted(files, key=lambda e: e.name):
            if not f.name.endswith(".json"):
                continue
            man = _manifest(f)
            if man is None:
                continue
            source = man.get("source") if isinstance(man.get("source"), str) else source
            entries.append({"size": man.get("size"), "aspect": man.get("aspect"), "images": man["shape"][0],
                            "skipped": man.get("skipped", 0), "bytes": man.get("bytes", 0)})
        nbytes = sum(f.stat(follow_symlinks=False).st_size for f in files)
        out.append({"dataset": source or d.name, "folder": str(d), "entries": entries, "bytes": nbytes})
    return out


def clear(cache_dir: str | Path | None = None, slug: str | None = None) -> int:
    """Delete every dataset's entries (or one dataset's); returns the bytes freed.

    Only what the cache can prove it wrote is deleted: in folders holding its marker (or its
    manifests), the regular files named as it names them. Links, sub-folders, other files and
    folders without the marker stay (a wrong ``--cache-dir`` or ``$STRATEGY_SEARCH_CACHE`` loses nothing).
    """
    root = checked_root(cache_dir)
    ours, others = _folders(root, slug)
    for d in others:
        log.warning("left %s alone: not a folder of the dataset cache (no %s in it)", d, MARKER_FILE)
    freed = 0
    for d in ours:
        try:
            with locked(d):  # never pull files from under a build in progress
                for f in _own_files(d):
                    if f.name not in (LOCK_FILE, MARKER_FILE):
                        freed += f.stat(follow_symlinks=False).st_size
                        os.unlink(f.path)
                rest = [e.name for e in os.scandir(d) if e.name not in (LOCK_FILE, MARKER_FILE)]
                if not rest:
                    for name in (MARKER_FILE, LOCK_FILE):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(d / name)
        except OSError as exc:
            raise _write_error(d, exc) from None
        if rest:
            log.warning("kept %d file(s) in %s that the dataset cache did not write", len(rest), d)
        else:
            with contextlib.suppress(OSError):
                d.rmdir()
    return freed
