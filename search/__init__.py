"""strategy-search: hyperparameter and strategy search for image classifiers, built on Optuna."""

__version__ = "0.1.0"
