"""Augmentation ops and sets (torchvision.transforms.v2), resizing with aspect handling.

An augmentation value in a space file is a set name (``standard``), a ``+``-joined list of op
names (``crop+flip+whiten``), or a list whose items are op names or ``{op: {arg: value}}``.
Random ops run on the training split only; ``whiten`` (per-image standardization) is a
deterministic normalization and is applied to every split and at export time.
Ops with a batched implementation (crop, flips, quarter turns, dihedral, erase, rotate) augment a
whole batch at once on its device; the others run per image.

The registry, the sets and the rules (:func:`check_augment`, :func:`resolve_augment`) import no
torch, so a space file is validated without it; the functions that augment import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from search.data.decode import ASPECTS
from search.core.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor
    from torchvision.transforms import v2


def tv2() -> Any:
    """``torchvision.transforms.v2``, imported on first use: importing torchvision takes 1.5 s (it
    loads torch._dynamo), which a trial that does not augment should not pay before its first step."""
    from torchvision.transforms import v2

    return v2


OpFactory = Callable[..., "v2.Transform"]
BatchOp = Callable[["Tensor"], "Tensor"]


@dataclass(frozen=True)
class AugmentOp:
    """One augmentation op, registered once: its per-image torchvision v2 factory and, where there
    is one, a batched implementation taking the same arguments. ``factory(size, **kwargs)`` gives
    a v2 transform for one image; ``batched(size, **kwargs)`` gives a function of a whole uint8
    (N, C, H, W) batch that makes an independent random draw per image in a few tensor ops.
    The factory's signature is the op's argument list (validation reads it)."""

    factory: OpFactory
    batched: Callable[..., BatchOp] | None = None


AUGMENT_OPS: Registry[AugmentOp] = Registry("augmentation op")
WHITEN = "whiten"


def augment_op(name: str, batched: Callable[..., BatchOp] | None = None) -> Callable[[OpFactory], OpFactory]:
    """Register a per-image v2 factory as op ``name`` (with its batched version, if any)."""

    def deco(factory: OpFactory) -> OpFactory:
        AUGMENT_OPS.add(name, AugmentOp(factory, batched))
        return factory

    return deco


def _size(size: int, fraction: float) -> int:
    return max(1, int(round(size * fraction)))


def _pad_pixels(size: int, padding: float) -> int:
    return int(padding) if padding >= 1 else _size(size, padding)


# ---------------------------------------------------------------- batched implementations
# Random draws are small CPU tensors from torch's global RNG (as the v2 ops draw theirs), so a
# seeded trial augments identically on the CPU and on CUDA; only the result moves to the device.


def _reflect(index: Tensor, n: int) -> Tensor:
    """Indices of reflect padding (edge pixel not repeated, torchvision's ``padding_mode="reflect"``)."""
    import torch

    index = index.abs()
    return torch.where(index >= n, 2 * (n - 1) - index, index)


def crop_at(batch: Tensor, top: Tensor, left: Tensor, size: int, pad: int) -> Tensor:
    """``size`` x ``size`` crops of the reflect-padded images at per-image offsets (in padded
    coordinates), as one gather from the unpadded batch."""
    import torch

    n, c, h, w = batch.shape
    if pad >= min(h, w):
        raise ValueError(f"reflect padding {pad} must be smaller than the image ({h}x{w})")
    if size > min(h, w) + 2 * pad:
        raise ValueError(f"crop size {size} is larger than the padded image ({h}+2*{pad})")
    steps = torch.arange(size, device=batch.device) - pad
    rows = _reflect(top.to(batch.device)[:, None] + steps, h)
    cols = _reflect(left.to(batch.device)[:, None] + steps, w)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, size * size).expand(n, c, size * size)
    return batch.reshape(n, c, h * w).gather(2, flat).view(n, c, size, size)


def _crop_batched(size: int, padding: float = 0.125) -> BatchOp:
    import torch

    pad = _pad_pixels(size, padding)

    def apply(batch: Tensor) -> Tensor:
        n, _, h, w = batch.shape
        top = torch.randint(0, h + 2 * pad - size + 1, (n,))
        left = torch.randint(0, w + 2 * pad - size + 1, (n,))
        return crop_at(batch, top, left, size, pad)

    return apply


def _flip_batched(dim: int) -> Callable[..., BatchOp]:
    def make(size: int, p: float = 0.5) -> BatchOp:
        import torch

        def apply(batch: Tensor) -> Tensor:
            mask = (torch.rand(len(batch)) < p).to(batch.device)
            return torch.where(mask.view(-1, 1, 1, 1), batch.flip(dim), batch)

        return apply

    return make


ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10  # RandomErasing's defaults


def erase_boxes(n: int, h: int, w: int, p: float) -> Tensor:
    """(n, 4) rows of top, left, height, width (height 0: not erased), drawn as v2.RandomErasing
    does per image: applied with probability ``p``; up to 10 tries of area and log-uniform aspect
    for a box that fits, the first that fits is used, none fits: no erasing."""
    import math

    import torch

    area = h * w * torch.empty(n, ERASE_TRIES).uniform_(*ERASE_SCALE)
    aspect = torch.exp(torch.empty(n, ERASE_TRIES).uniform_(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])))
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    use = fits.any(dim=1) & (torch.rand(n) < p)
    eh, ew = eh.gather(1, first).squeeze(1) * use, ew.gather(1, first).squeeze(1) * use
    top = (torch.rand(n) * (h - eh + 1)).long()
    left = (torch.rand(n) * (w - ew + 1)).long()
    return torch.stack([top, left, eh, ew], dim=1)


def erase_at(batch: Tensor, boxes: Tensor) -> Tensor:
    """Zero each image's box (top, left, height, width) in one masked select."""
    import torch

    _, _, h, w = batch.shape
    top, left, eh, ew = boxes.to(batch.device).unbind(1)
    r, c = torch.arange(h, device=batch.device), torch.arange(w, device=batch.device)
    rows = (r >= top[:, None]) & (r < (top + eh)[:, None])
    cols = (c >= left[:, None]) & (c < (left + ew)[:, None])
    mask = rows[:, :, None] & cols[:, None, :]
    return batch.masked_fill(mask[:, None], 0)


def _erase_batched(size: int, p: float = 0.5) -> BatchOp:
    def apply(batch: Tensor) -> Tensor:
        _, _, h, w = batch.shape
        return erase_at(batch, erase_boxes(len(batch), h, w, p))

    return apply


def rotate_by(batch: Tensor, angles: Tensor) -> Tensor:
    """Rotate each image by its angle (degrees, counter-clockwise) about its center, nearest
    neighbour, zeros outside: torchvision's tensor ``rotate`` (same inverse matrix and sampling
    grid) for a whole batch in one ``grid_sample``."""
    import torch

    n, c, h, w = batch.shape
    # torchvision builds the inverse matrix in double from -(angle % 360), then samples in float32.
    rot = torch.deg2rad(-torch.remainder(angles.double(), 360.0))
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.stack([torch.stack([cos, sin, torch.zeros_like(cos)], 1),
                         torch.stack([-sin, cos, torch.zeros_like(cos)], 1)], 1).float().to(batch.device)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=batch.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=batch.device)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=batch.device)], -1)
    scale = torch.tensor([0.5 * w, 0.5 * h], device=batch.device)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale).view(n, h, w, 2)
    out = torch.nn.functional.grid_sample(batch.float(), grid, mode="nearest", padding_mode="zeros",
                                          align_corners=False)
    return out.round_().to(batch.dtype)


def dihedral(batch: Tensor, k: int) -> Tensor:
    """Element ``k`` (0-7) of the dihedral group D4 on (..., H, W) images: ``k % 4`` counter-clockwise
    quarter turns, then a left-right mirror when ``k >= 4``. 0 is the identity; 1-3 the turns;
    4 the mirror; 6 the vertical flip; 5 and 7 the two diagonal reflections (transposes)."""
    import torch

    out = torch.rot90(batch, k % 4, dims=(-2, -1)) if k % 4 else batch
    return out.flip(-1) if k >= 4 else out


DIHEDRAL = tuple(range(8))


def dihedral_each(batch: Tensor, ks: Tensor) -> Tensor:
    """Image i transformed by element ``ks[i]`` of D4: the batch is split by element (8 groups at
    most), each group turned in one op, so the cost is a few copies of the batch, not one op per image."""
    import torch

    if batch.shape[-1] != batch.shape[-2]:
        raise ValueError(f"quarter turns need square images, got {tuple(batch.shape[-2:])}")
    ks = ks.to(batch.device)
    out = batch.clone()
    for k in torch.unique(ks).tolist():
        if k:
            idx = torch.nonzero(ks == k).flatten()
            out[idx] = dihedral(batch[idx], int(k))
    return out


def _rot90_batched(size: int) -> BatchOp:
    import torch

    def apply(batch: Tensor) -> Tensor:
        return dihedral_each(batch, torch.randint(0, 4, (len(batch),)))

    return apply


def _dihedral_batched(size: int) -> BatchOp:
    import torch

    def apply(batch: Tensor) -> Tensor:
        return dihedral_each(batch, torch.randint(0, 8, (len(batch),)))

    return apply


class _RandomDihedral:
    """Per-image twin of the batched quarter-turn ops: one element of the first ``n`` of D4 (the
    turns when ``n`` is 4, the whole group when 8), drawn from torch's global generator."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, img: Tensor) -> Tensor:
        import torch

        return dihedral(img, int(torch.randint(0, self.n, ())))


def _rotate_batched(size: int, degrees: float = 15.0) -> BatchOp:
    import torch

    def apply(batch: Tensor) -> Tensor:
        return rotate_by(batch, torch.empty(len(batch)).uniform_(-degrees, degrees))

    return apply


# ---------------------------------------------------------------- ops


@augment_op("crop", batched=_crop_batched)
def _crop(size: int, padding: float = 0.125) -> v2.Transform:
    """Random crop after reflect padding (``padding`` as a fraction of the size or pixels)."""
    return tv2().RandomCrop(size, padding=_pad_pixels(size, padding), padding_mode="reflect")


@augment_op("resized_crop")
def _resized_crop(size: int, scale: float = 0.6) -> v2.Transform:
    return tv2().RandomResizedCrop(size, scale=(scale, 1.0), antialias=True)


@augment_op("hflip", batched=_flip_batched(-1))
def _hflip(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomHorizontalFlip(p)


@augment_op("vflip", batched=_flip_batched(-2))
def _vflip(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomVerticalFlip(p)


@augment_op("rotate", batched=_rotate_batched)
def _rotate(size: int, degrees: float = 15.0) -> v2.Transform:
    return tv2().RandomRotation(degrees)


@augment_op("rot90", batched=_rot90_batched)
def _rot90(size: int) -> Any:
    """A random multiple of 90 degrees (0, 90, 180, 270): for data with no "up"."""
    return _RandomDihedral(4)


@augment_op("dihedral", batched=_dihedral_batched)
def _dihedral(size: int) -> Any:
    """A random element of the dihedral group (quarter turns and mirror images, 8 in all): for data
    with neither "up" nor handedness (microscopy, textures, aerial and satellite patches)."""
    return _RandomDihedral(8)


@augment_op("jitter")
def _jitter(size: int, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
            hue: float = 0.05) -> v2.Transform:
    return tv2().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)


@augment_op("erase", batched=_erase_batched)
def _erase(size: int, p: float = 0.5) -> v2.Transform:
    return tv2().RandomErasing(p=p, value=0)


@augment_op(WHITEN)
def _whiten(size: int) -> v2.Transform:
    # Handled by search.data.color.Preprocess; registered so the name validates and composes.
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
    # For data without a canonical orientation (the doctor's orientation probe says when).
    "light-dihedral": ("crop", "dihedral"),
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
        return tv2().Compose([AUGMENT_OPS.get(name).factory(size, **kwargs) for name, kwargs in self.ops])


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

            first = list(inspect.signature(AUGMENT_OPS.get(name).factory).parameters)[1:2]
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

    params = inspect.signature(AUGMENT_OPS.get(name).factory).parameters
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
    import torch

    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; allowed: {', '.join(ASPECTS)}")
    if isinstance(images, torch.Tensor):
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
    """Applies a plan's random ops to a uint8 batch, each image with its own draw. Runs of ops with
    a batched implementation act on the whole batch (on its device); an op without one runs per
    image through its v2 transform. ``per_image=True`` forces the v2 path for every op (benchmarks)."""

    def __init__(self, plan: AugmentPlan, size: int, per_image: bool = False) -> None:
        self.stages: list[BatchOp] = []
        singles: list[v2.Transform] = []
        for name, kwargs in plan.ops:
            op = AUGMENT_OPS.get(name)
            if op.batched is None or per_image:
                singles.append(op.factory(size, **kwargs))
                continue
            if singles:
                self.stages.append(_per_image(tv2().Compose(singles)))
                singles = []
            self.stages.append(op.batched(size, **kwargs))
        if singles:
            self.stages.append(_per_image(tv2().Compose(singles)))

    def __call__(self, batch: Tensor) -> Tensor:
        for stage in self.stages:
            batch = stage(batch)
        return batch


def _per_image(pipeline: v2.Compose) -> BatchOp:
    import torch

    def apply(batch: Tensor) -> Tensor:
        return torch.stack([pipeline(img) for img in batch])

    return apply
