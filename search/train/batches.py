"""Training batches gathered by index, the next one loaded in a background thread.

Gathering from the memory-mapped cache (page faults, copies) and, on CUDA, pinning and the
asynchronous host-to-GPU copy overlap with the current step. Sets already on the training
device (the GPU-resident path, in-RAM tensors) are indexed in place, with no thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch
from torch import Tensor

from search.data.datasets import Images, MappedImages


def batch_slices(order: Tensor, batch_size: int, steps: int) -> list[tuple[int, Tensor]]:
    """(step, indices) pairs; a lone last image is dropped (it would break BatchNorm's statistics)."""
    out = []
    for b in range(steps):
        idx = order[b * batch_size : (b + 1) * batch_size]
        if len(idx) < 2 and b > 0:
            continue
        out.append((b, idx))
    return out


def _load(x: Images, y: Tensor, idx: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    idx_dev = idx.to(x.device)
    # A JPEG cache decodes the batch where it trains (on CUDA: nvJPEG, no host copy of the pixels).
    xb, yb = (x.gather(idx_dev, device) if isinstance(x, MappedImages) else x[idx_dev]), y[idx_dev]
    if device.type == "cuda" and xb.device.type == "cpu":
        xb = xb.pin_memory().to(device, non_blocking=True)
    return xb, yb.to(device, non_blocking=True)


def iterate_batches(x: Images, y: Tensor, order: Tensor, batch_size: int, steps: int,
                    device: torch.device, slices: list[tuple[int, Tensor]] | None = None
                    ) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(step, images, labels) for one epoch in ``order`` (or the given ``slices``); labels on ``device``."""
    slices = batch_slices(order, batch_size, steps) if slices is None else slices
    if not isinstance(x, MappedImages) or not slices:
        for b, idx in slices:
            yield (b, *_load(x, y, idx, device))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        nxt = pool.submit(_load, x, y, slices[0][1], device)
        for i, (b, _) in enumerate(slices):
            xb, yb = nxt.result()
            if i + 1 < len(slices):
                nxt = pool.submit(_load, x, y, slices[i + 1][1], device)
            yield b, xb, yb
