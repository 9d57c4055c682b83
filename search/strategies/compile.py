"""Compiling the model (``compile``): ``torch.compile`` of the training forward and backward.

The training steps call the compiled module; evaluation, the EMA average, checkpoints and
exports use the plain model, which shares its weights. Compiling takes time once per trial and
input shape (tens of seconds for a ResNet on a GPU, minutes on a busy CPU); that time is part of
the trial's first epoch and of its cost (``epoch_seconds``, the study's timeout), and the trial
records it (``compile_seconds``). One shape per trial: a compiled trial trains on full batches
only, dropping each epoch's partial last batch (as timm's training loaders always do) instead of
compiling a second graph for it. It pays on a GPU for long trials whose steps are not already
launch-bound; CUDA graphs (``mode="reduce-overhead"``) are not used: unmeasured here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.core.config import TrialConfig
from search.strategies.base import Advice, Param, Strategy, TrainHooks, TrialContext, register

if TYPE_CHECKING:
    from torch import nn

BACKEND = "inductor"  # torch.compile's default: generated Triton (GPU) or C++ (CPU) kernels


class CompiledForward(TrainHooks):
    """Hands the training steps a ``torch.compile`` wrapper of the model (one static shape)."""

    def train_forward(self, model: "nn.Module") -> "nn.Module":
        import torch

        return torch.compile(model, backend=BACKEND, dynamic=False)


def _hooks(config: TrialConfig, context: TrialContext) -> TrainHooks | None:
    return CompiledForward() if config.compile else None


register(Strategy(
    "compile", Param(bool, False, "torch.compile the model for training (compile time counts in the trial's cost)"),
    "run", "torch.compile of the training step's model: faster steps on a GPU after a one-off compile per trial",
    off=False,
    advice=(Advice(("input_size",), False,
                   "large inputs make each step heavy: on a GPU, for trials of more than a few epochs, set "
                   "compile: true (compiled once per trial, its time counted in the trial's cost); on the CPU "
                   "it needs a C++ compiler and its minutes of compiling rarely pay"),),
    hooks=_hooks,
))

