"""Datasets, color spaces, augmentations and resizing."""

# The public modules (``from search.data import *``); each declares its own names.
__all__ = ["builtin", "cache", "color", "datasets", "decode", "preprocess", "sources", "transforms"]
