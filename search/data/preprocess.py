"""The preprocessing modules: color conversions and :class:`Preprocess`, applied identically at train,
eval and export.

Images enter as float RGB in [0, 1], shape (N, 3, H, W). :class:`Preprocess` converts them to
the trial's color space, normalizes them and (optionally) whitens each image. These are
``nn.Module`` objects (TorchScript- and ONNX-compatible), so an exported model carries its
preprocessing with it. They are built through :mod:`search.data.color`, whose registry names them
(and imports this module only when a model is built: validating a space needs no torch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Gray(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return 0.299 * r + 0.587 * g + 0.114 * b


class Hsv(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        maxc, _ = x.max(dim=1)
        minc, _ = x.min(dim=1)
        delta = maxc - minc
        safe = torch.where(delta > 0, delta, torch.ones_like(delta))
        rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
        h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
        h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
        s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
        return torch.stack([h, s, maxc], dim=1)


class Lab(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        # sRGB -> linear -> XYZ (D65) -> CIE L*a*b*, scaled to roughly [0, 1] / [-1, 1].
        lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp(min=0) ** 2.4)
        m = torch.tensor(
            [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
             [0.0193339, 0.1191920, 0.9503041]],
            dtype=x.dtype, device=x.device,
        )
        xyz = torch.einsum("ij,njhw->nihw", m, lin)
        white = torch.tensor([0.95047, 1.0, 1.08883], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        t = xyz / white
        eps = 216.0 / 24389.0
        f = torch.where(t > eps, t.clamp(min=eps) ** (1.0 / 3.0), (24389.0 / 27.0 * t + 16.0) / 116.0)
        lum = 116.0 * f[:, 1] - 16.0
        a = 500.0 * (f[:, 0] - f[:, 1])
        b = 200.0 * (f[:, 1] - f[:, 2])
        return torch.stack([lum / 100.0, a / 128.0, b / 128.0], dim=1)


class Preprocess(nn.Module):
    """uint8 or [0, 1] float RGB -> normalized tensor in the trial's color space.

    ``convert`` is the color space's conversion module; build one with
    :func:`search.data.color.build_preprocess` (by color space name) or :func:`search.data.color.make_preprocess`.
    """

    def __init__(self, color: str, convert: nn.Module, mean: list[float], std: list[float],
                 whiten: bool = False) -> None:
        super().__init__()
        self.color = color
        self.convert = convert
        self.whiten = whiten
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div(255.0)
        x = self.convert(x)
        x = (x - self.mean) / self.std
        if self.whiten:
            # Per-image standardization (zero mean, unit variance), as TF's per_image_standardization.
            flat = x.flatten(1)
            mu = flat.mean(dim=1).view(-1, 1, 1, 1)
            sd = flat.std(dim=1).clamp(min=1.0 / (flat.shape[1] ** 0.5)).view(-1, 1, 1, 1)
            x = (x - mu) / sd
        return x

    def describe(self) -> dict[str, object]:
        return {
            "color": self.color,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "whiten": self.whiten,
        }
