"""One trial's training loop, optimizers and schedules, and metrics."""

# The public modules (``from search.train import *``); each declares its own names.
__all__ = ["batches", "loop", "loss", "metrics"]
