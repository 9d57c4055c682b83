"""Datasets: built-in (offline) ones, ImageFolder trees and CSV manifests, through one cache.

Every dataset becomes uint8 RGB images at the trial's input size in the persistent, memory-mapped
cache (:mod:`search.data.cache`), plus integer labels and a fixed, seeded, stratified
train/validation/test split. Splits are index sets into the map: a batch is gathered by index,
so no process holds a copy of the dataset (sets small enough still go to the GPU whole).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from search.data import cache, jpeg_cache
from search.data.builtin import BUILTIN_DATASETS
from search.data.sources import limit_source, scan, split_indices
from search.data.transforms import resize_all
from search.core.errors import DataError
from search.core.spec import DatasetSpec

log = logging.getLogger(__name__)

GPU_CACHE_FRACTION = 0.25  # keep a dataset on the GPU when it takes at most this share of free memory


class MappedImages:
    """One split's images: ``index`` rows of the memory-mapped cache, gathered when indexed.

    The training loop, evaluation and statistics use ``len``, ``shape``, ``device``, ``x[slice]``
    and ``x[index tensor]`` (ordinary uint8 tensors of those rows only). Rows are read in
    ascending file order (then put back in the asked order) for the page cache's read-ahead.
    Anything else (a tensor method, a torch function) first materializes the whole split: fine
    for tests and tools, never done per batch.
    """

    def __init__(self, base: Tensor, index: Tensor, pages: cache.MappedPages | None = None) -> None:
        self.base = base
        self.index = index
        self.pages = pages
        self.dtype = base.dtype
        self.device = base.device

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.base.shape[1:]))

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def cpu(self) -> "MappedImages":
        return self

    def __getitem__(self, key: Any) -> Tensor:
        return self.gather(key)

    def gather(self, key: Any, device: torch.device | None = None) -> Tensor:
        """The rows ``key`` selects; ``device``: where a JPEG cache decodes them (raw rows are read on the CPU)."""
        rows = self.index[key]
        if self.pages is not None:
            try:
                self.pages.check()  # a file truncated under us: an error here, not SIGBUS in the gather
            except DataError:
                clear_cache()  # the next trial opens (and rebuilds) the entry afresh
                raise
        if rows.ndim == 0:
            return self.base[int(rows)]
        if isinstance(self.base, jpeg_cache.JpegImages):
            # Compressed rows are few pages: decoded in the asked order, no sorting or reordering copy.
            out = self.base.decode(rows, device or "cpu")
        elif len(rows) > 1 and bool((rows[1:] > rows[:-1]).all()):
            out = self.base[rows]
        else:
            order = torch.argsort(rows)
            out = torch.empty((len(rows), *self.base.shape[1:]), dtype=self.base.dtype)
            out[order] = self.base[rows[order]]
        if self.pages is not None:
            self.pages.read(out.numel() * out.element_size())
        return out

    def materialize(self) -> Tensor:
        return self[slice(None)]

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "index", "pages") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        from torch.utils._pytree import tree_map

        real = lambda a: a.materialize() if isinstance(a, MappedImages) else a  # noqa: E731
        return func(*tree_map(real, args), **tree_map(real, kwargs or {}))

    def cat(self, other: "MappedImages") -> "MappedImages":
        assert other.base is self.base
        return MappedImages(self.base, torch.cat([self.index, other.index]), self.pages)


Images = Tensor | MappedImages


def cat_images(a: Images, b: Images) -> Images:
    """Two splits as one (``--full`` retraining): index sets joined, nothing copied."""
    if isinstance(a, MappedImages) and isinstance(b, MappedImages) and a.base is b.base:
        return a.cat(b)
    as_t = lambda x: x.materialize() if isinstance(x, MappedImages) else x  # noqa: E731
    return torch.cat([as_t(a), as_t(b)])


@dataclass
class ImageSet:
    """Decoded images with labels and a train/val/test split (indices into ``images``)."""

    images: Tensor  # (N, 3, S, S) uint8, memory-mapped from the cache
    labels: Tensor
    classes: list[str]
    train: Tensor
    val: Tensor
    test: Tensor
    info: dict[str, object] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per image: width, height, gray, digest
    uniform_square: bool = False  # all images had this one square size before caching
    pages: cache.MappedPages | None = None  # bounds this process's resident share of the map

    @property
    def native_size(self) -> int | None:
        """The common square size of all images, or None when they differ."""
        return int(self.images.shape[-1]) if self.uniform_square else None

    def class_counts(self, split: str = "all") -> list[int]:
        idx = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        labels = self.labels if idx is None else self.labels[idx]
        return torch.bincount(labels, minlength=len(self.classes)).tolist()


@dataclass
class Prepared:
    """One dataset's splits at the trial's input size: uint8 RGB, mapped (or on the GPU when small)."""

    train_x: Images
    train_y: Tensor
    val_x: Images
    val_y: Tensor
    test_x: Images
    test_y: Tensor
    classes: list[str]
    size: int


def stratified_split(labels: Tensor, val_fraction: float, test_fraction: float, seed: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class shuffled split; every class keeps at least one training image."""
    return tuple(torch.from_numpy(a) for a in split_indices(labels.numpy(), val_fraction, test_fraction, seed))


# ----------------------------------------------------------------------------- loading


def builtin_source(spec: DatasetSpec) -> cache.Source:
    name = str(spec.name)

    def generate(size: int | None, room: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                          np.ndarray]:
        images, labels, classes = BUILTIN_DATASETS.get(name)(0)
        parts = np.zeros(len(labels), np.int8)
        if spec.limit is not None and spec.limit < len(labels):  # only the subsample is resized and cached
            keep, parts = limit_source(labels.numpy(), parts, spec)
            images, labels = images[torch.from_numpy(keep)], labels[torch.from_numpy(keep)]
        if size is not None and images.shape[-1] != size:
            room(len(labels) * 3 * size * size)  # the disk first: cheaper to find out
            # The resize holds the images as floats (4 bytes a value) and the result.
            cache.check_memory(5 * len(labels) * 3 * size * size, f"resizing {name} to {size}px")
            images = resize_all(images, size, "stretch")
        return images.numpy(), labels.numpy(), classes, parts

    parts = ["builtin", name, f"builtin-format={BUILTIN_FORMAT}"]
    if spec.limit is not None:  # the subsample keeps the whole set's split: that is part of the entry
        parts.append(f"limit={spec.limit}:{spec.split_seed}:{spec.val_fraction}:{spec.test_fraction}")
    return cache.Source("builtin", f"built-in:{name}", f"builtin-{name}", cache.fingerprint(parts),
                        generate=generate, limit=spec.limit)


BUILTIN_FORMAT = 1  # bump when a generator's output changes

_lock = threading.Lock()
_loaded: dict[tuple[DatasetSpec, int | None, str, str | None], ImageSet] = {}
_resized: dict[tuple[DatasetSpec, int | None, str, str, str | None], Prepared] = {}


def source_for(spec: DatasetSpec) -> cache.Source:
    """The dataset's source (files, labels, fingerprint); raises DataError on what the user must fix."""
    return builtin_source(spec) if spec.name is not None else scan(spec)


def load_dataset(spec: DatasetSpec, size: int | None = None, aspect: str = "stretch",
                 cache_dir: str | Path | None = None) -> ImageSet:
    """The dataset at ``size`` (None: its own size) from the cache (built once per machine), split."""
    key = (spec, size, aspect, str(cache_dir) if cache_dir else os.environ.get(cache.CACHE_ENV))
    with _lock:
        if key in _loaded:
            return _loaded[key]
    source = source_for(spec)
    if cache_format(spec, source, size) == "jpeg":
        entry: Any = jpeg_cache.open_entry(source, size, aspect, spec.cache_quality, cache_dir)
        images = entry.images
    else:
        entry = cache.open_entry(source, size, aspect, cache_dir)
        images = torch.from_numpy(entry.images)
    labels = torch.from_numpy(entry.labels.astype(np.int64))
    classes = entry.classes
    if source.kind != "builtin":
        have = np.bincount(entry.labels, minlength=len(classes))
        files = np.bincount(source.labels, minlength=len(classes))
        for c, (n_ok, n_files) in enumerate(zip(have.tolist(), files.tolist())):
            if n_ok == 0:
                raise DataError(f"{source.label}: class {classes[c]!r} has no readable images "
                                f"({n_files} files with image suffixes, all unreadable)")
    parts = torch.from_numpy(entry.parts.astype(np.int64))
    ranges = {p: torch.nonzero(parts == code).flatten() for code, p in enumerate(("train", "val", "test"))}
    train_idx = ranges["train"]
    # Missing val/test folders (or CSV splits) are carved out of train, stratified by class.
    need_val, need_test = len(ranges["val"]) == 0, len(ranges["test"]) == 0
    tr, va, te = stratified_split(labels[train_idx], spec.val_fraction if need_val else 0.0,
                                  spec.test_fraction if need_test else 0.0, spec.split_seed)
    val_idx = train_idx[va] if need_val else ranges["val"]
    test_idx = train_idx[te] if need_test else ranges["test"]
    train_idx = train_idx[tr]
    skipped = int(entry.manifest.get("skipped", 0))
    info: dict[str, object] = {"source": source.label, "skipped_images": skipped,
                               "skipped_files": entry.manifest.get("skipped_files", []),
                               "skipped_list": str(entry.path.with_suffix(".json")),
                               "cache": str(entry.path), "cache_built": entry.built,
                               # "folder": the dataset's own split (val/, test/ or a CSV's column); else carved
                               "split_from": {"val": "carved" if need_val else "folder",
                                              "test": "carved" if need_test else "folder"}}
    if skipped and info["skipped_list"] not in _warned:
        # Named once per process, also when the cache was built earlier: a count alone sends people hunting.
        _warned.add(str(info["skipped_list"]))
        log.warning("%s: %s", source.label, skipped_summary(info))
    if source.kind == "folder":
        info["layout"] = "split folders" if bool((parts > 0).any()) else "one folder"
    info["cache_format"] = "jpeg" if isinstance(images, jpeg_cache.JpegImages) else "raw"
    data = ImageSet(images, labels, classes, train_idx, val_idx, test_idx, info,
                    meta=entry.meta, uniform_square=bool(entry.manifest.get("uniform_square")),
                    pages=cache.MappedPages(entry.images))
    data.info.update({
        "n_images": len(data.train) + len(data.val) + len(data.test), "n_train": len(data.train),
        "n_val": len(data.val), "n_test": len(data.test), "classes": data.classes,
    })
    _check_splits(spec, data, need_val, need_test)
    with _lock:
        if len(_loaded) > 32:
            _loaded.clear()
        _loaded[key] = data
    return data


SKIPPED_NAMED = 3  # unreadable files named in a message; the cache manifest lists up to 100
_warned: set[str] = set()  # manifests whose unreadable files this process has named


def skipped_summary(info: Mapping[str, object], named: int = SKIPPED_NAMED) -> str:
    """``2 unreadable image(s) skipped: a.jpg (why), b.jpg (why); full list in X.json`` from a loaded
    set's ``info`` (empty when nothing was skipped)."""
    count = int(info.get("skipped_images", 0) or 0)  # type: ignore[call-overload]
    if not count:
        return ""
    files = list(info.get("skipped_files") or [])  # type: ignore[call-overload]
    # The decoder's reason often repeats the path: once is enough.
    shown = "; ".join(f"{path} ({str(why).replace(' ' + repr(str(path)), '')})" for path, why in files[:named])
    more = f"; {count - min(named, len(files))} more" if count > min(named, len(files)) else ""
    listed = "full list" if count <= cache.SKIPPED_LISTED else f"the first {cache.SKIPPED_LISTED} listed"
    return f"{count} unreadable image(s) skipped: {shown}{more}; {listed} in {info.get('skipped_list')}"
def cache_format(spec: DatasetSpec, source: cache.Source, size: int | None) -> str:
    """``raw`` or ``jpeg`` for this dataset at ``size``: as ``dataset.cache`` says; ``auto`` (the
    default) takes JPEG for image files whose raw entry would exceed half the RAM (built-ins: raw)."""
    if spec.cache != "auto":
        return spec.cache
    if source.kind == "builtin":
        return "raw"
    return jpeg_cache.choose_format("auto", len(source.files), size or spec.cache_max_side)


MIN_PER_CLASS = 3  # images a class needs to have one in training, validation and test


def _check_splits(spec: DatasetSpec, data: ImageSet, carved_val: bool, carved_test: bool) -> None:
    """An empty validation split is an error that says why; classes missing from validation or test
    (too few images to split) are a warning naming them: their scores are never measured."""
    n = len(data.classes)
    counts = data.class_counts()
    small = [c for c, k in zip(data.classes, counts) if 0 < k < MIN_PER_CLASS]
    hint = (f"a class needs at least {MIN_PER_CLASS} images to have one each in training, validation and test: "
            "add images to those classes, or merge or drop them")
    if len(data.val) == 0:
        if carved_val and len(small) == sum(k > 0 for k in counts):
            raise DataError(f"{spec.label}: the validation split is empty: every class has fewer than "
                            f"{MIN_PER_CLASS} images ({n} classes, {sum(counts)} images); {hint}")
        largest = max(data.class_counts("train") + [0])
        raise DataError(f"{spec.label}: the validation split is empty: with val_fraction {spec.val_fraction:g} no "
                        f"class gives one image to it (the largest has {largest}); raise val_fraction, add images, "
                        "or give a val/ folder (CSV: split column val)")
    missing = [split for split, idx in (("validation", data.val), ("test", data.test)) if len(idx)]
    for split in missing:
        have = set(data.labels[data.val if split == "validation" else data.test].tolist())
        absent = [c for i, (c, k) in enumerate(zip(data.classes, counts)) if k > 0 and i not in have]
        if absent:
            shown = ", ".join(repr(c) for c in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            why = (f"too few images ({', '.join(sorted({str(counts[data.classes.index(c)]) for c in absent}))}) to "
                   "split" if (carved_val if split == "validation" else carved_test) else "none in that split")
            log.warning("%s: %d of %d classes have no %s image (%s): %s; their %s scores are not measured",
                        spec.label, len(absent), n, split, why, shown, split)


def native_size(spec: DatasetSpec, cache_dir: str | Path | None = None) -> int | None:
    """The images' common square side (None when they differ) without decoding any file: from the
    file headers (kept beside the cache), or for a built-in from its generated (cached) images."""
    source = source_for(spec)
    if source.kind == "builtin":
        return load_dataset(spec, None, cache_dir=cache_dir).native_size
    return cache.square_side(source, cache_dir)


def prepare(spec: DatasetSpec, size: int | None, aspect: str, device: torch.device,
            cache_dir: str | Path | None = None) -> Prepared:
    """The dataset's splits at ``size`` x ``size`` for ``device`` (cached per process)."""
    key = (spec, size, aspect, str(device), str(cache_dir) if cache_dir else os.environ.get(cache.CACHE_ENV))
    with _lock:
        if key in _resized:
            return _resized[key]
    data = load_dataset(spec, size, aspect, cache_dir)
    parts: list[Images] = [MappedImages(data.images, idx, data.pages) for idx in (data.train, data.val, data.test)]
    labels = [data.labels[idx] for idx in (data.train, data.val, data.test)]
    if device.type == "cuda":
        nbytes = sum(p.numel() for p in parts)
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < GPU_CACHE_FRACTION * free:
            # Small enough: the whole set lives on the GPU, batches are gathered there.
            parts = [p.materialize().to(device, non_blocking=True) for p in parts]  # type: ignore[union-attr]
            labels = [y.to(device, non_blocking=True) for y in labels]
    prepared = Prepared(parts[0], labels[0], parts[1], labels[1], parts[2], labels[2], data.classes,
                        int(data.images.shape[-1]))
    with _lock:
        if len(_resized) > 16:
            _resized.clear()
        _resized[key] = prepared
    return prepared


def clear_cache() -> None:
    """Forget this process's opened datasets and which unreadable files it named (the files on disk stay)."""
    with _lock:
        _loaded.clear()
        _resized.clear()
        _warned.clear()


def dataset_doc(data: str) -> dict[str, Any]:
    """A command-line DATA as a space file's ``dataset``: a built-in name, a .csv manifest or an image folder."""
    if data in BUILTIN_DATASETS:
        return {"name": data}
    return {"csv": data} if data.lower().endswith(".csv") else {"path": data}
