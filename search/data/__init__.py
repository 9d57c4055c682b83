"""Datasets, colour spaces, augmentations and resizing."""
