"""Optuna samplers and pruners by the names space files use; each checks its own options."""

# The public modules (``from search.algorithms import *``); each declares its own names.
__all__ = ["pruners", "samplers"]
