"""Predict with an exported model: image files or folders in, class and probability out.

Images are decoded and resized exactly as the dataset cache does for training
(:func:`~search.data.decode.decode_fit` at the model's input size and aspect), then run through
the model's own preprocessing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from search.artifacts.bundle import Bundle
from search.data.decode import IMAGE_SUFFIXES, decode_fit, not_regular
from search.core.errors import DataError


@dataclass
class Prediction:
    path: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "class": self.label, "probability": self.probability,
                "probabilities": self.probabilities}


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their images (recursively, sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif os.path.lexists(p):  # a FIFO would block forever, a dangling link fails
            raise DataError(f"{p}: {not_regular(p) or 'not a regular file'}")
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError("no images given")
    return out


@dataclass
class Unreadable:
    """A file that could not be decoded, and why."""

    path: str
    why: str


def load_images(files: Sequence[Path], bundle: Bundle) -> tuple[torch.Tensor | None, list[Path], list[Unreadable]]:
    """uint8 RGB (N, 3, S, S) at the model's input size, decoded and resized as in training, with the
    files it holds and the files that could not be read (None when none could)."""
    images, read, unreadable = [], [], []
    for f in files:
        img, why, _ = decode_fit(f, bundle.input_size, bundle.aspect)
        if img is None:
            unreadable.append(Unreadable(str(f), str(why)))
            continue
        images.append(torch.from_numpy(img))
        read.append(f)
    return (torch.stack(images) if images else None), read, unreadable


def iter_predictions(bundle: Bundle, files: Sequence[Path], device: torch.device | None = None, batch: int = 256,
                     *, strict: bool = False) -> Iterator[Prediction | Unreadable]:
    """Predictions in file order, a chunk at a time (a pipe reader sees the first lines at once); an
    unreadable file is yielded as :class:`Unreadable`, or with ``strict`` stops everything (DataError)."""
    for i in range(0, len(files), batch):
        images, read, unreadable = load_images(files[i : i + batch], bundle)
        if strict and unreadable:
            raise DataError(f"{unreadable[0].path}: not a readable image ({unreadable[0].why})")
        probs = bundle.probabilities(images, device).tolist() if images is not None else []
        by_path = {str(f): p for f, p in zip(read, probs)}
        bad = {u.path: u for u in unreadable}
        for f in files[i : i + batch]:
            if str(f) in bad:
                yield bad[str(f)]
                continue
            p = by_path[str(f)]
            best = max(range(len(p)), key=p.__getitem__)
            yield Prediction(str(f), bundle.classes[best], p[best], dict(zip(bundle.classes, p)))


def predict_files(bundle: Bundle, paths: Iterable[str | Path], device: torch.device | None = None,
                  batch: int = 256, *, strict: bool = False) -> tuple[list[Prediction], list[Unreadable]]:
    """Every readable image's prediction, and the files skipped as unreadable.

    Exit rule of the ``predict`` command, kept here: unreadable files are skipped and named; it is an
    error (DataError) only when no file could be read, or with ``strict`` when any could not.
    """
    files = image_files(paths)
    done: list[Prediction] = []
    skipped: list[Unreadable] = []
    for item in iter_predictions(bundle, files, device, batch, strict=strict):
        (skipped if isinstance(item, Unreadable) else done).append(item)  # type: ignore[arg-type]
    if not done:
        raise nothing_readable(skipped)
    return done, skipped


def nothing_readable(skipped: Sequence[Unreadable]) -> DataError:
    """The one-line error when no image could be read (the first one named)."""
    first = skipped[0]
    if len(skipped) == 1:
        return DataError(f"{first.path}: not a readable image ({first.why})")
    return DataError(f"none of the {len(skipped)} images could be read (first: {first.path}: {first.why})")
