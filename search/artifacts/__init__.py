"""A trial's files: the model bundle format, the artifact store, what a kept trial uploads and reads back."""

# The public modules (``from search.artifacts import *``); each declares its own names.
__all__ = ["bundle", "figures", "store", "trial_files"]
