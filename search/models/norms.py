"""Normalization layers of the built-in CNN by the names space files use (``norm``).

Importable without torch (the space validator reads the names); each factory imports it when a
model is built: ``factory(channels, lrn_size) -> nn.Module``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from search.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

NORMS: Registry[Callable[[int, int], nn.Module]] = Registry("normalization layer")


@NORMS.register("batchnorm")
def _batchnorm(channels: int, lrn_size: int) -> nn.Module:
    from torch import nn

    return nn.BatchNorm2d(channels)


@NORMS.register("lrn")
def _lrn(channels: int, lrn_size: int) -> nn.Module:
    from torch import nn

    return nn.LocalResponseNorm(lrn_size)


@NORMS.register("none")
def _none(channels: int, lrn_size: int) -> nn.Module:
    from torch import nn

    return nn.Identity()
