"""strategy-search: hyperparameter and strategy search for image classifiers, built on Optuna."""

__version__ = "0.1.0"

# The public modules (``from search import *``); each declares its own names.
__all__ = [
    "__version__", "algorithms", "artifacts", "cli", "core", "data", "models", "records", "space", "storage",
    "strategies", "study", "tools", "train",
]
