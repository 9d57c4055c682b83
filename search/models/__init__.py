"""Model builders: the built-in CNN and timm backbones, behind one factory (:mod:`search.models.factory`).

Importing the package imports no torch: the registries the space validator reads
(:mod:`search.models.norms`, the fine-tuning modes and backbone names of :mod:`search.models.backbones`)
are importable without it.
"""

# The public modules; each declares its own names (``create_model`` is in ``factory``).
__all__ = ["backbones", "cnn", "factory", "norms", "tta"]
