"""Search-space files: YAML -> validated SearchSpace, constraints and enqueued configurations."""

# The public modules (``from search.space import *``); each declares its own names.
__all__ = ["constraints", "enqueue", "parse"]
