"""What users run on a study: doctor, report, export, retrain, ablate, confirm, predict, dashboard..."""

# The public modules (``from search.tools import *``); each declares its own names.
__all__ = [
    "ablate", "catalogue", "confirm", "dashboard", "dataset_cache", "doctor", "export", "predict", "report",
    "retrain", "stats", "summary", "weights",
]
