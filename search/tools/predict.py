"""Predict with an exported model: image files or folders in, class and probability out.

Images are decoded and resized exactly as the dataset cache does for training
(:func:`~search.data.decode.decode_fit` at the model's input size and aspect), then run through
the model's own preprocessing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

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


def load_images(files: Sequence[Path], bundle: Bundle) -> torch.Tensor:
    """uint8 RGB (N, 3, S, S) at the model's input size, decoded and resized as in training."""
    images = []
    for f in files:
        img, why, _ = decode_fit(f, bundle.input_size, bundle.aspect)
        if img is None:
            raise DataError(f"{f}: not a readable image ({why})")
        images.append(torch.from_numpy(img))
    return torch.stack(images)


def predict_files(bundle: Bundle, paths: Iterable[str | Path], device: torch.device | None = None,
                  batch: int = 256) -> list[Prediction]:
    files = image_files(paths)
    out: list[Prediction] = []
    for i in range(0, len(files), batch):
        chunk = files[i : i + batch]
        probs = bundle.probabilities(load_images(chunk, bundle), device)
        for f, p in zip(chunk, probs.tolist()):
            best = max(range(len(p)), key=p.__getitem__)
            out.append(Prediction(str(f), bundle.classes[best], p[best], dict(zip(bundle.classes, p))))
    return out
