"""Datasets: built-in (offline) ones, ImageFolder trees and CSV manifests, through one cache.

Every dataset becomes uint8 RGB images at the trial's input size in the persistent, memory-mapped
cache (:mod:`search.data.cache`), plus integer labels and a fixed, seeded, stratified
train/validation/test split. Splits are index sets into the map: a batch is gathered by index,
so no process holds a copy of the dataset (sets small enough still go to the GPU whole).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from search.data import cache, jpeg_cache
from search.data.sources import scan
from search.data.transforms import resize_all
from search.core.errors import DataError
from search.core.registry import Registry
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


BUILTIN_DATASETS: Registry[Callable[[int], tuple[Tensor, Tensor, list[str]]]] = Registry("built-in dataset")
builtin = BUILTIN_DATASETS.register


@builtin("digits")
def load_digits(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    gray = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
    images = gray.unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
    return images, torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)]


# Two colors of (nearly) equal luminance: in gray they look alike, so color-space choices matter.
_RED = (200.0, 60.0, 60.0)
_GREEN = (30.0, 145.0, 95.0)
_SHAPES = ("circle", "square", "triangle")


def _render_shapes(n: int, seed: int, size: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """n noisy images of a colored shape; returns images, shape ids and color ids."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    shape_id = torch.randint(0, 3, (n,), generator=g)
    color_id = torch.randint(0, 2, (n,), generator=g)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for i in range(n):
        r = 5.0 + 5.0 * torch.rand((), generator=g).item()
        cx = r + (size - 2 * r) * torch.rand((), generator=g).item()
        cy = r + (size - 2 * r) * torch.rand((), generator=g).item()
        s = int(shape_id[i])
        if s == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif s == 1:
            mask = ((xx - cx).abs() <= r * 0.85) & ((yy - cy).abs() <= r * 0.85)
        else:
            mask = (yy - cy <= r * 0.8) & (yy - cy >= -r) & ((xx - cx).abs() <= (yy - cy + r) * 0.55)
        base = torch.tensor(_RED if color_id[i] == 0 else _GREEN).view(3, 1, 1)
        base = base + 12.0 * torch.randn((3, 1, 1), generator=g)
        background = 90.0 + 40.0 * torch.rand((), generator=g).item()
        img = torch.full((3, size, size), background) + 30.0 * torch.randn((3, size, size), generator=g)
        img = torch.where(mask.unsqueeze(0), base + 18.0 * torch.randn((3, size, size), generator=g), img)
        images[i] = img.clamp(0, 255).round().to(torch.uint8)
    return images, shape_id, color_id


@builtin("shapes")
def load_shapes(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Generated 32x32 noisy shapes: 6 classes = {circle, square, triangle} x {red, green}."""
    images, shape_id, color_id = _render_shapes(1800, seed=1000 + seed)
    labels = shape_id * 2 + color_id
    classes = [f"{c}_{s}" for s in _SHAPES for c in ("red", "green")]
    return images, labels, classes


@builtin("shapes-rare")
def load_shapes_rare(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Imbalanced binary task: is it a green triangle (~1 in 6)? Hard negatives share shape or color."""
    images, shape_id, color_id = _render_shapes(1800, seed=2000 + seed)
    labels = ((shape_id == 2) & (color_id == 1)).long()
    return images, labels, ["other", "target"]


def stratified_split(labels: Tensor, val_fraction: float, test_fraction: float, seed: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class shuffled split; every class keeps at least one training image."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    y = labels.numpy()
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n = len(idx)
        n_test = min(int(math.floor(n * test_fraction + 0.5)), max(0, n - 1))
        n_val = min(int(math.floor(n * val_fraction + 0.5)), max(0, n - 1 - n_test))
        test.extend(idx[:n_test])
        val.extend(idx[n_test : n_test + n_val])
        train.extend(idx[n_test + n_val :])
    as_t = lambda a: torch.from_numpy(np.sort(np.asarray(a, dtype=np.int64)))  # noqa: E731
    return as_t(train), as_t(val), as_t(test)


def _subsample(labels: Tensor, limit: int, seed: int) -> Tensor:
    rng = np.random.default_rng(seed + 7919)
    y = labels.numpy()
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        share = max(1, int(round(limit * len(idx) / len(y))))
        keep.extend(rng.choice(idx, size=min(share, len(idx)), replace=False))
    return torch.from_numpy(np.sort(np.asarray(keep, dtype=np.int64)))


# ----------------------------------------------------------------------------- loading


def builtin_source(spec: DatasetSpec) -> cache.Source:
    name = str(spec.name)

    def generate(size: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        images, labels, classes = BUILTIN_DATASETS.get(name)(0)
        if size is not None:
            images = resize_all(images, size, "stretch")
        return images.numpy(), labels.numpy(), classes

    fp = cache.fingerprint(["builtin", name, f"builtin-format={BUILTIN_FORMAT}"])
    return cache.Source("builtin", f"built-in:{name}", f"builtin-{name}", fp, generate=generate)


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
    if spec.limit is not None and spec.limit < len(data.labels):
        data = _limit(data, spec.limit, spec.split_seed)
    data.info.update({
        "n_images": len(data.train) + len(data.val) + len(data.test), "n_train": len(data.train),
        "n_val": len(data.val), "n_test": len(data.test), "classes": data.classes,
    })
    if len(data.val) == 0:
        raise DataError(f"{spec.label}: the validation split is empty; add images or raise val_fraction")
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


def native_size(spec: DatasetSpec, cache_dir: str | Path | None = None) -> int | None:
    """The images' common square side (None when they differ) without decoding any file: from the
    file headers (kept beside the cache), or for a built-in from its generated (cached) images."""
    source = source_for(spec)
    if source.kind == "builtin":
        return load_dataset(spec, None, cache_dir=cache_dir).native_size
    return cache.square_side(source, cache_dir)


def _limit(data: ImageSet, limit: int, seed: int) -> ImageSet:
    keep = torch.zeros(len(data.labels), dtype=torch.bool)
    keep[_subsample(data.labels, limit, seed)] = True
    data.train, data.val, data.test = (idx[keep[idx]] for idx in (data.train, data.val, data.test))
    return data


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
