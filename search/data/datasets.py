"""Datasets: built-in (offline) ones and user ImageFolder directories, decoded once and cached.

Every dataset becomes uint8 RGB tensors plus integer labels and a fixed, seeded, stratified
train/validation/test split. Per process, decoded images are cached by dataset, and resized
copies by (dataset, size, aspect), so a trial spends its time training rather than decoding.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from search.data.transforms import resize_all
from search.errors import DataError
from search.space import DatasetSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
SPLIT_DIRS = ("train", "val", "test")
GPU_CACHE_FRACTION = 0.25  # keep a dataset on the GPU when it takes at most this share of free memory


@dataclass
class ImageSet:
    """Decoded images with labels and a train/val/test split (indices into ``images``)."""

    images: Tensor | list[Tensor]  # (N, 3, H, W) uint8, or a list of (3, h, w) when sizes differ
    labels: Tensor
    classes: list[str]
    train: Tensor
    val: Tensor
    test: Tensor
    info: dict[str, object] = field(default_factory=dict)

    @property
    def native_size(self) -> int | None:
        """The common square size of all images, or None when they differ."""
        if isinstance(self.images, Tensor) and self.images.shape[-1] == self.images.shape[-2]:
            return int(self.images.shape[-1])
        return None

    def class_counts(self, split: str = "all") -> list[int]:
        idx = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        labels = self.labels if idx is None else self.labels[idx]
        return torch.bincount(labels, minlength=len(self.classes)).tolist()


@dataclass
class Prepared:
    """One split set resized to the trial's input size (uint8 RGB, on the training device)."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    size: int


BUILTIN_DATASETS: dict[str, Callable[[int], tuple[Tensor, Tensor, list[str]]]] = {}


def builtin(name: str) -> Callable[[Callable[[int], tuple[Tensor, Tensor, list[str]]]], Callable]:
    def deco(fn: Callable[[int], tuple[Tensor, Tensor, list[str]]]) -> Callable:
        BUILTIN_DATASETS[name] = fn
        return fn

    return deco


@builtin("digits")
def load_digits(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    gray = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
    images = gray.unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
    return images, torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)]


# Two colours of (nearly) equal luminance: in gray they look alike, so colour-space choices matter.
_RED = (200.0, 60.0, 60.0)
_GREEN = (30.0, 145.0, 95.0)
_SHAPES = ("circle", "square", "triangle")


def _render_shapes(n: int, seed: int, size: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """n noisy images of a coloured shape; returns images, shape ids and colour ids."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    shape_id = torch.randint(0, 3, (n,), generator=g)
    colour_id = torch.randint(0, 2, (n,), generator=g)
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
        base = torch.tensor(_RED if colour_id[i] == 0 else _GREEN).view(3, 1, 1)
        base = base + 12.0 * torch.randn((3, 1, 1), generator=g)
        background = 90.0 + 40.0 * torch.rand((), generator=g).item()
        img = torch.full((3, size, size), background) + 30.0 * torch.randn((3, size, size), generator=g)
        img = torch.where(mask.unsqueeze(0), base + 18.0 * torch.randn((3, size, size), generator=g), img)
        images[i] = img.clamp(0, 255).round().to(torch.uint8)
    return images, shape_id, colour_id


@builtin("shapes")
def load_shapes(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Generated 32x32 noisy shapes: 6 classes = {circle, square, triangle} x {red, green}."""
    images, shape_id, colour_id = _render_shapes(1800, seed=1000 + seed)
    labels = shape_id * 2 + colour_id
    classes = [f"{c}_{s}" for s in _SHAPES for c in ("red", "green")]
    return images, labels, classes


@builtin("shapes-rare")
def load_shapes_rare(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Imbalanced binary task: is it a green triangle (~1 in 6)? Hard negatives share shape or colour."""
    images, shape_id, colour_id = _render_shapes(1800, seed=2000 + seed)
    labels = ((shape_id == 2) & (colour_id == 1)).long()
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


# ----------------------------------------------------------------------------- ImageFolder


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def decode_image(path: Path, max_side: int) -> Tensor | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        log.warning("skipping unreadable image %s: %s", path, exc)
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _read_class_tree(root: Path, classes: list[str] | None, max_side: int
                     ) -> tuple[list[Tensor], list[int], list[str], int]:
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no class folders found; expected {root}/<class name>/<images>")
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{root}: classes {', '.join(unknown)} are not in the training folder")
    images: list[Tensor] = []
    labels: list[int] = []
    skipped = 0
    for d in dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        good = 0
        for f in files:
            img = decode_image(f, max_side)
            if img is None:
                skipped += 1
                continue
            images.append(img)
            labels.append(classes.index(d.name))
            good += 1
        if good == 0:
            raise DataError(
                f"{d}: class {d.name!r} has no readable images ({len(files)} files with image suffixes "
                f"{', '.join(sorted(IMAGE_SUFFIXES))})"
            )
    return images, labels, classes, skipped


def stack_if_uniform(images: Sequence[Tensor]) -> Tensor | list[Tensor]:
    shapes = {tuple(img.shape) for img in images}
    return torch.stack(list(images)) if len(shapes) == 1 else list(images)


def load_folder(spec: DatasetSpec) -> ImageSet:
    """An ImageFolder tree: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``."""
    root = Path(str(spec.path)).expanduser()
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a directory")
    has_splits = (root / "train").is_dir()
    parts: dict[str, tuple[list[Tensor], list[int]]] = {}
    skipped = 0
    if has_splits:
        images, labels, classes, skipped = _read_class_tree(root / "train", None, spec.cache_max_side)
        parts["train"] = (images, labels)
        for split in ("val", "test"):
            if (root / split).is_dir():
                imgs, labs, _, s = _read_class_tree(root / split, classes, spec.cache_max_side)
                parts[split] = (imgs, labs)
                skipped += s
    else:
        images, labels, classes, skipped = _read_class_tree(root, None, spec.cache_max_side)
        parts["train"] = (images, labels)
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two")

    all_images: list[Tensor] = []
    all_labels: list[int] = []
    ranges: dict[str, Tensor] = {}
    for split in SPLIT_DIRS:
        if split in parts:
            start = len(all_images)
            all_images.extend(parts[split][0])
            all_labels.extend(parts[split][1])
            ranges[split] = torch.arange(start, len(all_images))
    labels_t = torch.tensor(all_labels, dtype=torch.int64)
    train_idx = ranges["train"]
    # Missing val/test folders are carved out of train, stratified by class.
    sub = labels_t[train_idx]
    need_val, need_test = "val" not in ranges, "test" not in ranges
    tr, va, te = stratified_split(sub, spec.val_fraction if need_val else 0.0,
                                  spec.test_fraction if need_test else 0.0, spec.split_seed)
    val_idx = ranges["val"] if not need_val else train_idx[va]
    test_idx = ranges["test"] if not need_test else train_idx[te]
    train_idx = train_idx[tr]
    if skipped:
        log.warning("%s: skipped %d unreadable image(s)", root, skipped)
    info = {"source": str(root), "skipped_images": skipped, "layout": "split folders" if has_splits else "one folder"}
    return ImageSet(stack_if_uniform(all_images), labels_t, classes, train_idx, val_idx, test_idx, info)


# ----------------------------------------------------------------------------- loading and caching

_lock = threading.Lock()
_decoded: dict[DatasetSpec, ImageSet] = {}
_resized: dict[tuple[DatasetSpec, int, str, str], Prepared] = {}


def load_dataset(spec: DatasetSpec) -> ImageSet:
    """Decode (once per process) and split a dataset."""
    with _lock:
        if spec in _decoded:
            return _decoded[spec]
    if spec.name is not None:
        images, labels, classes = BUILTIN_DATASETS[spec.name](0)
        data = ImageSet(images, labels, classes, *_empty3(), info={"source": f"built-in:{spec.name}"})
        tr, va, te = stratified_split(labels, spec.val_fraction, spec.test_fraction, spec.split_seed)
        data.train, data.val, data.test = tr, va, te
    else:
        data = load_folder(spec)
    if spec.limit is not None and spec.limit < len(data.labels):
        data = _limit(data, spec.limit, spec.split_seed)
    data.info.update({
        "n_images": len(data.labels), "n_train": len(data.train), "n_val": len(data.val),
        "n_test": len(data.test), "classes": data.classes,
    })
    if len(data.val) == 0:
        raise DataError(f"{spec.label}: the validation split is empty; add images or raise val_fraction")
    with _lock:
        _decoded[spec] = data
    return data


def _empty3() -> tuple[Tensor, Tensor, Tensor]:
    e = torch.empty(0, dtype=torch.int64)
    return e, e, e


def _limit(data: ImageSet, limit: int, seed: int) -> ImageSet:
    keep = {int(i) for i in _subsample(data.labels, limit, seed)}
    remap = lambda idx: torch.tensor([i for i in idx.tolist() if i in keep], dtype=torch.int64)  # noqa: E731
    data.train, data.val, data.test = remap(data.train), remap(data.val), remap(data.test)
    return data


def _select(images: Tensor | list[Tensor], idx: Tensor) -> Tensor | list[Tensor]:
    if isinstance(images, Tensor):
        return images[idx]
    return [images[i] for i in idx.tolist()]


def prepare(spec: DatasetSpec, size: int | None, aspect: str, device: torch.device) -> Prepared:
    """The dataset's splits at ``size`` x ``size`` on ``device`` (cached per process)."""
    data = load_dataset(spec)
    if size is None:
        size = data.native_size or 64
    key = (spec, size, aspect, str(device))
    with _lock:
        if key in _resized:
            return _resized[key]
    parts = [resize_all(_select(data.images, idx), size, aspect) for idx in (data.train, data.val, data.test)]
    labels = [data.labels[idx] for idx in (data.train, data.val, data.test)]
    if device.type == "cuda":
        nbytes = sum(p.numel() for p in parts)
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < GPU_CACHE_FRACTION * free:
            parts = [p.to(device, non_blocking=True) for p in parts]
            labels = [y.to(device, non_blocking=True) for y in labels]
        else:
            # Too big to keep on the GPU: pinned host memory makes the per-batch copies asynchronous.
            parts = [p.pin_memory() for p in parts]
    prepared = Prepared(parts[0], labels[0], parts[1], labels[1], parts[2], labels[2], data.classes, size)
    with _lock:
        if len(_resized) > 16:
            _resized.clear()
        _resized[key] = prepared
    return prepared


def clear_cache() -> None:
    with _lock:
        _decoded.clear()
        _resized.clear()
