"""Augmentation ops and sets (torchvision.transforms.v2), resizing with aspect handling.

An augmentation value in a space file is a set name (``standard``), a ``+``-joined list of op
names (``crop+flip+whiten``), or a list whose items are op names or ``{op: {arg: value}}``.
Random ops run on the training split only; ``whiten`` (per-image standardisation) is a
deterministic normalisation and is applied to every split and at export time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from search.data.decode import ASPECTS
from search.registry import Registry

if TYPE_CHECKING:
    from torchvision.transforms import v2


def tv2() -> Any:
    """``torchvision.transforms.v2``, imported on first use: importing torchvision takes 1.5 s (it
    loads torch._dynamo), which a trial that does not augment should not pay before its first step."""
    from torchvision.transforms import v2

    return v2


OpFactory = Callable[..., "v2.Transform"]
AUGMENT_OPS: Registry[OpFactory] = Registry("augmentation op")
WHITEN = "whiten"


def _size(size: int, fraction: float) -> int:
    return max(1, int(round(size * fraction)))


@AUGMENT_OPS.register("crop")
def _crop(size: int, padding: float = 0.125) -> v2.Transform:
    """Random crop after reflect padding (``padding`` as a fraction of the size or pixels)."""
    pad = int(padding) if padding >= 1 else _size(size, padding)
    return tv2().RandomCrop(size, padding=pad, padding_mode="reflect")


@AUGMENT_OPS.register("resized_crop")
def _resized_crop(size: int, scale: float = 0.6) -> v2.Transform:
    return tv2().RandomResizedCrop(size, scale=(scale, 1.0), antialias=True)


@AUGMENT_OPS.register("hflip")
def _hflip(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomHorizontalFlip(p)


@AUGMENT_OPS.register("vflip")
def _vflip(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomVerticalFlip(p)


@AUGMENT_OPS.register("rotate")
def _rotate(size: int, degrees: float = 15.0) -> v2.Transform:
    return tv2().RandomRotation(degrees)


@AUGMENT_OPS.register("jitter")
def _jitter(size: int, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
            hue: float = 0.05) -> v2.Transform:
    return tv2().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)


@AUGMENT_OPS.register("erase")
def _erase(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomErasing(p=p, value=0)


@AUGMENT_OPS.register(WHITEN)
def _whiten(size: int) -> v2.Transform:
    # Handled by search.data.colour.Preprocess; registered so the name validates and composes.
    return tv2().Identity()


ALIASES = {"flip": "hflip"}

AUGMENT_SETS: dict[str, tuple[Any, ...]] = {
    "none": (),
    "crop": ("crop",),
    "flip": ("hflip",),
    "whiten": (WHITEN,),
    "light": ("crop", "hflip"),
    "standard": ("crop", "hflip", {"rotate": {"degrees": 10}}),
    "heavy": ("resized_crop", "hflip", "rotate", "jitter", "erase"),
    "geometric": ("crop", "hflip", "vflip", "rotate"),
}


@dataclass(frozen=True)
class AugmentPlan:
    """A resolved augmentation value: ordered (op, kwargs) pairs and whether to whiten."""

    ops: tuple[tuple[str, Mapping[str, Any]], ...]
    whiten: bool

    @property
    def random(self) -> bool:
        return bool(self.ops)

    def build(self, size: int) -> v2.Compose | None:
        if not self.ops:
            return None
        return tv2().Compose([AUGMENT_OPS.get(name)(size, **kwargs) for name, kwargs in self.ops])


def _items(value: Any, sets: Mapping[str, Sequence[Any]], depth: int = 0) -> list[tuple[str, dict[str, Any]]]:
    if depth > 5:
        raise ValueError("augmentation sets nest too deeply")
    if isinstance(value, str):
        name = ALIASES.get(value, value)
        if value in sets:
            return _items(list(sets[value]), sets, depth + 1)
        if name in AUGMENT_OPS:
            return [(name, {})]
        if value in AUGMENT_SETS:
            return _items(list(AUGMENT_SETS[value]), sets, depth + 1)
        if "+" in value:
            return _items(value.split("+"), sets, depth + 1)
        if name not in AUGMENT_OPS:
            raise ValueError(
                f"unknown augmentation {value!r}; sets: {', '.join([*AUGMENT_SETS, *sets])}; "
                f"ops: {', '.join([*AUGMENT_OPS.names(), *ALIASES])}"
            )
        return [(name, {})]
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError(f"an op with arguments is {{op: {{arg: value}}}}, got {dict(value)!r}")
        ((op, args),) = value.items()
        name = ALIASES.get(op, op)
        if name not in AUGMENT_OPS:
            raise ValueError(f"unknown augmentation op {op!r}; ops: {', '.join(AUGMENT_OPS.names())}")
        if isinstance(args, Mapping):
            kwargs = dict(args)
        else:
            # {rotate: 20} is shorthand for the op's first argument.
            import inspect

            first = list(inspect.signature(AUGMENT_OPS.get(name)).parameters)[1:2]
            if not first:
                raise ValueError(f"op {op!r} takes no arguments")
            kwargs = {first[0]: args}
        _check_kwargs(name, kwargs)
        return [(name, kwargs)]
    if isinstance(value, (list, tuple)):
        out: list[tuple[str, dict[str, Any]]] = []
        for item in value:
            out.extend(_items(item, sets, depth + 1))
        return out
    raise ValueError(f"augmentation must be a set name, an op or a list of ops, got {value!r}")


def _check_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    import inspect

    params = inspect.signature(AUGMENT_OPS.get(name)).parameters
    allowed = [p for p in params if p != "size"]
    for k, v in kwargs.items():
        if k not in allowed:
            raise ValueError(f"op {name!r} has no argument {k!r}; allowed: {', '.join(allowed) or 'none'}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"op {name!r} argument {k!r} must be a number, got {v!r}")


def resolve_augment(value: Any, sets: Mapping[str, Sequence[Any]] | None = None) -> AugmentPlan:
    items = _items(value, sets or {})
    whiten = any(name == WHITEN for name, _ in items)
    ops = tuple((name, kwargs) for name, kwargs in items if name != WHITEN)
    return AugmentPlan(ops=ops, whiten=whiten)


def check_augment(value: Any, extra_sets: Sequence[str]) -> str | None:
    """Why ``value`` is not a valid augmentation (None when it is)."""
    try:
        # Custom sets are validated on their own; here their names only need to exist.
        _items(value, {name: () for name in extra_sets})
    except ValueError as exc:
        return str(exc)
    return None


def resize_all(images: Sequence[Tensor] | Tensor, size: int, aspect: str) -> Tensor:
    """Resize uint8 (3, h, w) images to (N, 3, size, size); ``pad`` letterboxes to keep aspect."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; allowed: {', '.join(ASPECTS)}")
    if isinstance(images, Tensor):
        if images.shape[-2:] == (size, size):
            return images
        if images.shape[-1] == images.shape[-2] or aspect == "stretch":
            return tv2().functional.resize(images, [size, size], antialias=True)
        images = list(images)
    out = torch.zeros((len(images), 3, size, size), dtype=torch.uint8)
    for i, img in enumerate(images):
        out[i] = _resize_one(img, size, aspect)
    return out


def _resize_one(img: Tensor, size: int, aspect: str) -> Tensor:
    h, w = img.shape[-2:]
    if aspect == "stretch" or h == w:
        return tv2().functional.resize(img, [size, size], antialias=True)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = tv2().functional.resize(img, [nh, nw], antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    return tv2().functional.pad(small, [left, top, size - nw - left, size - nh - top], fill=0)


class BatchAugment:
    """Applies a per-image random pipeline to a uint8 batch (each image gets its own draw)."""

    def __init__(self, plan: AugmentPlan, size: int) -> None:
        self.pipeline = plan.build(size)

    def __call__(self, batch: Tensor) -> Tensor:
        if self.pipeline is None:
            return batch
        return torch.stack([self.pipeline(img) for img in batch])
