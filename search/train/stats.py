"""One epoch's per-step statistics, written on the training device and read once.

A GPU step of a small model takes ~2 ms; reading a number back (``float(loss)``) waits for the
GPU to finish, and every extra small kernel costs a launch. So the loop records, per step, only
what a bare loop does not: the loss copied into its slot of a preallocated table (1 op), the
predicted classes written into their slot (``argmax`` with ``out=``, 1 op) and the per-parameter
gradient norms (``torch._foreach_norm``, the fused form ``clip_grad_norm_`` uses, 1 op) stacked
into their row (1 op). Sums, the largest gradient norm, accuracy and the non-finite check are
computed from the table when it is read: at the epoch's end, and on the CPU (where reading
costs no synchronization) every :data:`CHECK_EVERY_CPU` steps, so a diverging CPU trial stops
early. A NaN or infinite loss or gradient norm raises :class:`NonFiniteLoss` naming the epoch and
the first step where it appeared, at the latest at the epoch's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

CHECK_EVERY_CPU = 16  # steps between non-finite checks on the CPU (on CUDA: once per epoch)


class NonFiniteLoss(RuntimeError):
    """The training loss (or the gradient norm) became NaN or infinite."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step  # 1-based step within the epoch where it first appeared


@dataclass
class EpochTotals:
    loss: float  # mean training loss over the epoch's images
    accuracy: float  # share of training images whose prediction names their own class
    grad_norm_max: float  # largest total gradient norm of the epoch's steps
    images: int


class StepStats:
    """Per-step loss, predictions and gradient norms of one epoch, kept on ``device``."""

    def __init__(self, n_params: int, device: torch.device, check_every: int | None = None) -> None:
        self.n_params = n_params
        self.device = device
        self.check_every = check_every if check_every is not None else (0 if device.type == "cuda" else CHECK_EVERY_CPU)
        self._sizes: list[int] = []
        self._steps: list[int] = []

    def begin(self, steps: Sequence[int], sizes: Sequence[int]) -> None:
        """Start an epoch of ``len(sizes)`` optimizer steps (``steps``: their numbers, 0-based)."""
        if list(sizes) != self._sizes:
            # Columns: the step's mean loss, then each parameter's gradient norm. Allocated once
            # per trial (every epoch has the same batches), sliced into per-step views once.
            self.table = torch.zeros((len(sizes), 1 + self.n_params), device=self.device)
            rows = self.table.unbind(0)
            self._loss = [r[0] for r in rows]
            self._norms = [r[1:] for r in rows]
            self.pred = torch.empty(sum(sizes), dtype=torch.long, device=self.device)
            self._pred = self.pred.split(list(sizes))
            self._sizes = list(sizes)
        self._steps = list(steps)
        self._labels: list[Tensor] = []
        self._checked = 0

    @torch.no_grad()
    def record(self, i: int, loss: Tensor, logits: Tensor, labels: Tensor, grads: list[Tensor]) -> None:
        """Step ``i`` of the epoch (after ``backward``): its loss, predictions and gradient norms."""
        self._loss[i].copy_(loss)
        torch.argmax(logits, dim=1, out=self._pred[i])
        self._labels.append(labels)
        row = self._norms[i]
        if grads and len(grads) == self.n_params:
            torch.stack(torch._foreach_norm(grads), out=row)
        else:  # some parameters got no gradient this step: their total norm alone, the rest zero
            row.zero_()
            if grads:
                torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)), out=row[0])

    def total_norm(self, i: int) -> Tensor:
        """Step ``i``'s total gradient norm (for clipping), from its recorded per-parameter norms."""
        return torch.linalg.vector_norm(self._norms[i])

    def after_step(self, epoch: int, i: int) -> None:
        """The periodic non-finite check (CPU only: reading back costs a GPU a synchronization)."""
        if self.check_every and (i + 1) % self.check_every == 0:
            self._check(epoch, i + 1)

    def _check(self, epoch: int, upto: int) -> None:
        if bool(torch.isfinite(self.table[self._checked : upto]).all()):
            self._checked = upto
            return
        rows = self.table[self._checked : upto].cpu()
        bad = (~torch.isfinite(rows)).any(dim=1).nonzero().flatten()
        first = int(bad[0])
        row = rows[first]
        step = self._steps[self._checked + first] + 1
        if not bool(torch.isfinite(row[0])):
            what, value = "loss", float(row[0])
        else:
            what, value = "gradient norm", float(torch.linalg.vector_norm(row[1:]))
        raise NonFiniteLoss(f"{what} became {value} at epoch {epoch}, step {step}", epoch=epoch, step=step)

    def finish(self, epoch: int) -> EpochTotals:
        """The epoch's totals, read from the device once; raises :class:`NonFiniteLoss`."""
        n = len(self._labels)
        self._check(epoch, n)
        sizes = torch.tensor(self._sizes[:n], dtype=torch.float32).to(self.device, non_blocking=True)
        images = sum(self._sizes[:n])
        loss_sum = (self.table[:n, 0] * sizes).sum()
        correct = (self.pred[:images] == torch.cat(self._labels)).sum() if n else torch.zeros((), device=self.device)
        grad_max = torch.linalg.vector_norm(self.table[:n, 1:], dim=1).max() if n else torch.zeros((), device=self.device)
        loss, right, gmax = torch.stack([loss_sum, correct.float(), grad_max]).tolist()
        return EpochTotals(loss / max(1, images), right / max(1, images), gmax, images)
