"""Built-in datasets (offline: shipped with a package or generated), registered with their class names.

The registry is importable without torch: a space file naming a built-in set is validated, and its
classes (``positive_class``) checked, from the entry's metadata; the generator, which needs torch,
runs only when the dataset cache is built (:mod:`search.data.datasets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from search.core.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Builtin:
    """A built-in dataset: ``generate(seed)`` -> uint8 images (N, 3, S, S) and int64 labels indexing
    ``classes``. Calling the entry gives ``(images, labels, classes)``."""

    generate: Callable[[int], tuple[Tensor, Tensor]]
    classes: tuple[str, ...]

    def __call__(self, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
        images, labels = self.generate(seed)
        return images, labels, list(self.classes)


BUILTIN_DATASETS: Registry[Builtin] = Registry("built-in dataset")


def builtin(name: str, classes: tuple[str, ...]) -> Callable[[Callable[[int], tuple[Tensor, Tensor]]],
                                                             Callable[[int], tuple[Tensor, Tensor]]]:
    """Register a generator ``seed -> (images, labels)`` as built-in dataset ``name`` with its classes."""

    def deco(generate: Callable[[int], tuple[Tensor, Tensor]]) -> Callable[[int], tuple[Tensor, Tensor]]:
        BUILTIN_DATASETS.add(name, Builtin(generate, tuple(classes)))
        return generate

    return deco


@builtin("digits", classes=tuple(str(i) for i in range(10)))
def load_digits(seed: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    gray = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))
    images = gray.unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
    return images, torch.from_numpy(d.target.astype(np.int64))


# Two colors of (nearly) equal luminance: in gray they look alike, so color-space choices matter.
_RED = (200.0, 60.0, 60.0)
_GREEN = (30.0, 145.0, 95.0)
_SHAPES = ("circle", "square", "triangle")
_COLORS = ("red", "green")


def _render_shapes(n: int, seed: int, size: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """n noisy images of a colored shape; returns images, shape ids and color ids."""
    import torch

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


@builtin("shapes", classes=tuple(f"{c}_{s}" for s in _SHAPES for c in _COLORS))
def load_shapes(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Generated 32x32 noisy shapes: 6 classes = {circle, square, triangle} x {red, green}."""
    images, shape_id, color_id = _render_shapes(1800, seed=1000 + seed)
    return images, shape_id * len(_COLORS) + color_id


@builtin("shapes-rare", classes=("other", "target"))
def load_shapes_rare(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Imbalanced binary task: is it a green triangle (~1 in 6)? Hard negatives share shape or color."""
    images, shape_id, color_id = _render_shapes(1800, seed=2000 + seed)
    return images, ((shape_id == 2) & (color_id == 1)).long()
