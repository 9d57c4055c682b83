"""A trained model on disk: the bundle format and the kept trial checkpoints."""

# The public modules (``from search.artifacts import *``); each declares its own names.
__all__ = ["bundle", "checkpoints"]
