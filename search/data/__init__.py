"""Datasets, color spaces, augmentations and resizing."""
