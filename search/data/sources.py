"""Dataset sources on disk: ImageFolder trees and CSV manifests, scanned without decoding.

A scan lists the files, their labels and splits and fingerprints them (path, size, mtime); the
pixels come from :mod:`search.data.cache`. Every problem a user can fix is a :class:`DataError`
naming the folder, or the CSV row.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from search.data.builtin import BUILTIN_DATASETS
from search.data.cache import Source, fingerprint, slug_for
from search.data.decode import DECODER, IMAGE_SUFFIXES
from search.core.errors import DataError
from search.core.spec import DatasetSpec

SPLIT_DIRS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "validation": 1, "test": 2, "": -1}
SHOWN = 5  # problems listed in one error


def scan(spec: DatasetSpec) -> Source:
    return scan_csv(spec) if spec.csv else scan_folder(spec)


def dataset_classes(spec: DatasetSpec) -> list[str]:
    """The dataset's class names, without decoding or generating an image (and without torch): a
    built-in set's from its registry entry, a folder's or CSV's from a scan (which raises DataError
    on what the user must fix)."""
    if spec.name is not None:
        return list(BUILTIN_DATASETS.get(spec.name).classes)
    return scan(spec).classes


def _files(d: Path) -> list[str]:
    """Image files under ``d`` (hidden folders skipped), in component-wise path order (as sorting by
    ``Path.parts`` gives): entries are visited sorted by name, so 10^5 paths need no sort key."""
    out: list[str] = []

    def visit(folder: str) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if not e.name.startswith("."):
                    visit(e.path)
            elif _links_to_folder(e):
                continue  # a link to a folder is not followed (as os.walk does): no loops
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                out.append(e.path)  # dangling links, FIFOs...: skipped and counted as unreadable when cached

    visit(str(d))
    return out


def _links_to_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link that loops (ELOOP): not a folder
        return False


def _class_tree(root: Path, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders found; expected {root}/<class name>/<images>")
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{root}: classes {', '.join(unknown)} are not in the training folder")
    files: list[str] = []
    labels: list[int] = []
    for d in dirs:
        found = _files(d)
        if not found:
            raise DataError(f"{d}: class {d.name!r} has no readable images (no files with image suffixes "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        files.extend(found)
        labels.extend([classes.index(d.name)] * len(found))
    return classes, files, labels


def scan_folder(spec: DatasetSpec) -> Source:
    """``root/<class>/*`` or ``root/{train,val,test}/<class>/*``."""
    root = Path(str(spec.path)).expanduser()
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a directory")
    root = root.resolve()
    files: list[str] = []
    labels: list[int] = []
    parts: list[int] = []
    if (root / "train").is_dir():
        classes, f, y = _class_tree(root / "train", None)
        files, labels, parts = f, y, [0] * len(f)
        for code, split in ((1, "val"), (2, "test")):
            if (root / split).is_dir():
                _, f, y = _class_tree(root / split, classes)
                files += f
                labels += y
                parts += [code] * len(f)
    else:
        classes, files, labels = _class_tree(root, None)
        parts = [0] * len(files)
    return _source("folder", str(root), root.name, classes, files, labels, parts, spec, str(root))


def limit_indices(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """About ``limit`` indices, stratified: each class keeps its share (at least one image), sorted."""
    rng = np.random.default_rng(seed + 7919)
    y = np.asarray(labels)
    keep: list[int] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        share = max(1, int(round(limit * len(idx) / len(y))))
        keep.extend(rng.choice(idx, size=min(share, len(idx)), replace=False).tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class shuffled split (train, val, test positions, sorted); every class keeps a training image."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    y = np.asarray(labels)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n = len(idx)
        n_test = min(int(math.floor(n * test_fraction + 0.5)), max(0, n - 1))
        n_val = min(int(math.floor(n * val_fraction + 0.5)), max(0, n - 1 - n_test))
        test.extend(idx[:n_test])
        val.extend(idx[n_test : n_test + n_val])
        train.extend(idx[n_test + n_val :])
    as_a = lambda a: np.sort(np.asarray(a, dtype=np.int64))  # noqa: E731
    return as_a(train), as_a(val), as_a(test)


def carve_splits(labels: np.ndarray, parts: np.ndarray, val_fraction: float, test_fraction: float,
                 seed: int) -> np.ndarray:
    """``parts`` (0 train, 1 val, 2 test) with a missing validation or test split carved out of train."""
    parts = np.asarray(parts, np.int8).copy()
    need_val, need_test = not (parts == 1).any(), not (parts == 2).any()
    train = np.flatnonzero(parts == 0)
    _, va, te = split_indices(np.asarray(labels)[train], val_fraction if need_val else 0.0,
                              test_fraction if need_test else 0.0, seed)
    parts[train[va]] = 1
    parts[train[te]] = 2
    return parts


def limit_source(labels: np.ndarray, parts: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """``dataset.limit``: (the kept positions, their parts). The splits are carved from the whole set first,
    then the stratified subsample is drawn, so the subsample keeps the whole set's split."""
    assert spec.limit is not None
    parts = carve_splits(labels, parts, spec.val_fraction, spec.test_fraction, spec.split_seed)
    keep = limit_indices(labels, spec.limit, spec.split_seed)
    return keep, parts[keep]


def _source(kind: str, label: str, name: str, classes: list[str], files: list[str], labels: list[int],
            parts: list[int], spec: DatasetSpec, root: str) -> Source:
    if len(classes) < 2:
        raise DataError(f"{label}: only one class ({classes[0]!r}); a classifier needs at least two")
    limit = spec.limit if spec.limit is not None and spec.limit < len(files) else None
    if limit is not None:  # the subsample is drawn here, so only its files are ever decoded and cached
        keep, kept_parts = limit_source(np.asarray(labels), np.asarray(parts), spec)
        files, labels, parts = [files[i] for i in keep], [labels[i] for i in keep], kept_parts.tolist()
    # The decoder's rules are part of the key: a cache decoded under older ones (before EXIF
    # orientation was applied) is rebuilt, not served sideways.
    fp = fingerprint([kind, label, root, f"max_side={spec.cache_max_side}", f"decoder={DECODER}", *classes],
                     files, labels, parts, root)
    return Source(kind, label, slug_for(name, label), fp, classes, files, np.asarray(labels, np.int64),
                  np.asarray(parts, np.int8), spec.cache_max_side, limit=limit)


def scan_csv(spec: DatasetSpec) -> Source:
    """A manifest with columns ``path,label[,split]``; paths relative to ``root`` (default: its folder)."""
    path = Path(str(spec.csv)).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"dataset csv {path}: no such file")
    root = Path(spec.root).expanduser().resolve() if spec.root else path.parent
    if not root.is_dir():
        raise DataError(f"dataset root {root}: not a folder")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    if not rows:
        raise DataError(f"{path}: empty; expected a header row path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}: row 1: the header must name columns path and label (and optionally split), "
                        f"got {','.join(rows[0])}")
    ip, il = header.index("path"), header.index("label")
    isplit = header.index("split") if "split" in header else None
    problems: list[str] = []
    seen: dict[str, int] = {}
    files: list[str] = []
    names: list[str] = []
    parts: list[int] = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * len(header)
        rel, label = cells[ip], cells[il]
        split = cells[isplit].lower() if isplit is not None else ""
        if not rel:
            problems.append(f"row {n}: empty path")
            continue
        full = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(root, rel))
        if not label:
            problems.append(f"row {n}: empty label for {rel}")
        if full in seen:
            problems.append(f"row {n}: duplicate of row {seen[full]} ({rel})")
            continue
        seen[full] = n
        if not os.path.isfile(full):
            problems.append(f"row {n}: unknown path {rel} (no such file under {root})")
        if split not in SPLIT_CODES:
            problems.append(f"row {n}: split {cells[isplit]!r} is not one of train, val, test")
        files.append(full)
        names.append(label)
        parts.append(SPLIT_CODES.get(split, -1))
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise DataError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems[:SHOWN]) + more)
    if not files:
        raise DataError(f"{path}: no rows after the header")
    classes = sorted(set(names))
    if any(p >= 0 for p in parts) and any(p < 0 for p in parts):
        parts = [0 if p < 0 else p for p in parts]  # rows without a split train
    if not any(p == 0 or p < 0 for p in parts):
        raise DataError(f"{path}: no training rows (split column has only val/test)")
    index = {c: i for i, c in enumerate(classes)}
    return _source("csv", str(path), path.stem, classes, files, [index[c] for c in names],
                   [max(p, 0) for p in parts], spec, str(root))
