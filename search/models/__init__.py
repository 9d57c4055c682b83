"""Model builders: the built-in CNN and timm backbones, behind one factory."""

from search.models.factory import create_model

__all__ = ["create_model"]
