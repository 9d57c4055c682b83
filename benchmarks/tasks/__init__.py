"""The accuracy task suite: small image-classification tasks built offline, with fixed splits.

Every task is written once as an ImageFolder tree ``ROOT/<task>/{train,val,test}/<class>/*.png``
(deterministic: the same files on every machine), from pictures that ship with packages
(scikit-image's sample photographs and textures, scikit-learn's digits) and from generators
written here. Each one stands for a kind of data a user brings:

| task | kind |
| --- | --- |
| ``patches-d4`` | few images per class (30), 16 classes, patches of real photos in every orientation (rotation/mirror invariant) |
| ``digits`` | canonical orientation: mirror images and vertical flips change the label (6/9, 2/5) |
| ``color-shapes`` | color that matters: 3 shapes x 3 hues of equal luminance |
| ``textures-gray`` | fine texture at full resolution, color that does not matter (random tints) |
| ``regions-40`` | many classes (40) with 12 training images each: regions of photos |
| ``cells-imbalanced`` | microscopy-like cells in random orientations, classes imbalanced 8:1 |
| ``glyphs-noisy`` | upright glyphs (arrow up/down, L/J, T/upside-down T: flips change the label), 25% of training labels wrong |
| ``mixed-sizes`` | photo crops of many sizes and aspect ratios (10 to 40 px) |

``build(name, root)`` writes a task (once; a finished tree is reused) and returns its folder.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

VERSION = 1  # bump when a generator changes: the trees are rebuilt
Split = dict[str, list[np.ndarray]]  # class -> images (H, W, 3) uint8


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    make: Callable[[int], dict[str, Split]]  # seed -> {"train"|"val"|"test": {class: images}}
    budget_cpu_s: float  # CPU seconds each arm may spend (one thread)
    input_size: int = 16
    flags: tuple[str, ...] = field(default_factory=tuple)  # d4 | canonical | color | imbalance | noisy | sizes


# ----------------------------------------------------------------------------- pictures


def _skimage_images() -> dict[str, np.ndarray]:
    """scikit-image's bundled sample pictures (in its wheel: no download), RGB uint8."""
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "brick", "grass",
             "gravel", "camera", "moon", "coins", "cell", "page", "text", "immunohistochemistry"]
    out = {}
    for n in names:
        img = np.asarray(getattr(data, n)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out[n] = img[:, :, :3].astype(np.uint8)
    out["motorcycle"] = np.asarray(data.stereo_motorcycle()[0])[:, :, :3].astype(np.uint8)
    return out


def _resize(img: np.ndarray, short: int) -> np.ndarray:
    """Downscale so the short side is ``short`` pixels (antialiased)."""
    from PIL import Image

    h, w = img.shape[:2]
    s = short / min(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS))


def _to(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    from PIL import Image

    w, h = (size, size) if isinstance(size, int) else size
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def _crop(img: np.ndarray, rng: np.random.Generator, size: int, center: tuple[float, float] | None = None,
          jitter: int = 0) -> np.ndarray:
    h, w = img.shape[:2]
    if center is None:
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    else:
        top = int(np.clip(center[0] - size // 2 + rng.integers(-jitter, jitter + 1), 0, h - size))
        left = int(np.clip(center[1] - size // 2 + rng.integers(-jitter, jitter + 1), 0, w - size))
    return img[top:top + size, left:left + size]


def d4(img: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0-7) of the dihedral group: k % 4 quarter turns, mirrored when k >= 4."""
    out = np.rot90(img, k % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def _splits(counts: dict[str, tuple[int, int, int]], draw: Callable[[str, int], np.ndarray]) -> dict[str, Split]:
    out: dict[str, Split] = {"train": {}, "val": {}, "test": {}}
    for cls, ns in counts.items():
        images = [draw(cls, i) for i in range(sum(ns))]
        a, b = ns[0], ns[0] + ns[1]
        out["train"][cls], out["val"][cls], out["test"][cls] = images[:a], images[a:b], images[b:]
    return out


# ----------------------------------------------------------------------------- tasks


def patches_d4(seed: int) -> dict[str, Split]:
    """16 pictures; each image a 16 px patch of one (downscaled to 96 px), in a random one of 8 orientations."""
    rng = np.random.default_rng(seed)
    pics = {n: _resize(img, 96) for n, img in _skimage_images().items()}
    names = sorted(pics)[:16]
    return _splits({n: (30, 20, 20) for n in names}, lambda c, i: d4(_crop(pics[c], rng, 16), int(rng.integers(8))))


def digits(seed: int) -> dict[str, Split]:
    """scikit-learn's 8x8 digits at 16 px: 40 training images per class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    by_class: dict[str, list[np.ndarray]] = {str(k): [] for k in range(10)}
    for i in order:
        g = (d.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
        by_class[str(d.target[i])].append(_to(np.repeat(g[:, :, None], 3, axis=2), 16))
    return _splits({c: (40, 30, 30) for c in by_class}, lambda c, i: by_class[c][i])


_HUES = {"red": (205, 70, 70), "green": (40, 150, 80), "blue": (80, 100, 230)}  # similar luminance


def _canvas(rng: np.random.Generator, size: int, mean: float = 110, sd: float = 30) -> "object":
    from PIL import Image

    return Image.fromarray(rng.normal(mean, sd, (size, size, 3)).clip(0, 255).astype(np.uint8))


def _shape(draw: object, kind: str, cx: float, cy: float, r: float, fill: tuple[int, ...]) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)  # type: ignore[attr-defined]
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)  # type: ignore[attr-defined]
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)  # type: ignore[attr-defined]


def color_shapes(seed: int) -> dict[str, Split]:
    """Circle/square/triangle x red/green/blue on noise, 32 px drawn, 16 px stored: color is half the label."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)

    def draw(cls: str, i: int) -> np.ndarray:
        kind, hue = cls.split("-")
        img = _canvas(rng, 32)
        fill = tuple(int(np.clip(v + rng.normal(0, 15), 0, 255)) for v in _HUES[hue])
        _shape(ImageDraw.Draw(img), kind, *rng.uniform(11, 21, 2), rng.uniform(6, 10), fill)
        return _to(np.asarray(img), 16)

    return _splits({f"{k}-{h}": (40, 25, 25) for k in ("circle", "square", "triangle") for h in _HUES}, draw)


def textures_gray(seed: int) -> dict[str, Split]:
    """16 px patches of 8 grayscale pictures at full resolution (fine texture), each randomly tinted."""
    rng = np.random.default_rng(seed)
    pics = _skimage_images()
    names = ["brick", "grass", "gravel", "camera", "moon", "coins", "cell", "page"]

    def draw(cls: str, i: int) -> np.ndarray:
        patch = _crop(pics[cls], rng, 16).astype(np.float32)
        tint = rng.uniform(0.6, 1.3, 3)
        return (patch * tint).clip(0, 255).astype(np.uint8)

    return _splits({n: (40, 25, 25) for n in names}, draw)


def regions_40(seed: int) -> dict[str, Split]:
    """40 classes: 8 regions (2 x 4) of 5 photos downscaled to 64 x ~96; crops jittered by up to 3 px."""
    rng = np.random.default_rng(seed)
    pics = _skimage_images()
    counts, centers = {}, {}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle"):
        img = _resize(pics[name], 64)
        h, w = img.shape[:2]
        for r in range(2):
            for c in range(4):
                cls = f"{name}-{r}{c}"
                counts[cls] = (12, 8, 8)
                centers[cls] = (img, ((r + 0.5) * h / 2, (c + 0.5) * w / 4))

    def draw(cls: str, i: int) -> np.ndarray:
        img, center = centers[cls]
        patch = _crop(img, rng, 16, center, jitter=3).astype(np.float32)
        return (patch * rng.uniform(0.85, 1.15)).clip(0, 255).astype(np.uint8)

    return _splits(counts, draw)


_CELLS = {"round": (120, 40, 40), "elongated": (60, 20, 20), "binucleate": (30, 20, 20), "spotted": (15, 15, 15),
          "ring": (15, 15, 15)}


def cells_imbalanced(seed: int) -> dict[str, Split]:
    """Microscopy-like cells (5 kinds) at random angles, stained purple/pink; training 120:60:30:15:15."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)

    def draw(cls: str, i: int) -> np.ndarray:
        img = Image.fromarray(rng.normal(225, 12, (32, 32, 3)).clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        membrane = tuple(int(v) for v in (rng.uniform(190, 230), rng.uniform(120, 160), rng.uniform(190, 230)))
        nucleus = tuple(int(v) for v in (rng.uniform(70, 110), rng.uniform(30, 60), rng.uniform(120, 160)))
        cx, cy = rng.uniform(13, 19, 2)
        a = rng.uniform(0, math.pi)
        ax, ay = (rng.uniform(9, 12), rng.uniform(3.5, 5)) if cls == "elongated" else (rng.uniform(8, 11),) * 2
        pts = [(cx + ax * math.cos(t) * math.cos(a) - ay * math.sin(t) * math.sin(a),
                cy + ax * math.cos(t) * math.sin(a) + ay * math.sin(t) * math.cos(a))
               for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
        d.polygon(pts, fill=membrane)
        if cls == "ring":
            d.polygon(pts, outline=nucleus, width=2)
        elif cls == "binucleate":
            for s in (-1, 1):
                ox, oy = s * 3.5 * math.cos(a), s * 3.5 * math.sin(a)
                d.ellipse([cx + ox - 2.5, cy + oy - 2.5, cx + ox + 2.5, cy + oy + 2.5], fill=nucleus)
        elif cls == "spotted":
            for _ in range(6):
                sx, sy = cx + rng.uniform(-6, 6), cy + rng.uniform(-6, 6)
                d.ellipse([sx - 1, sy - 1, sx + 1, sy + 1], fill=nucleus)
        else:
            r = rng.uniform(3, 4.5)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=nucleus)
        img = img.filter(ImageFilter.GaussianBlur(0.6))
        return _to(np.asarray(img), 16)

    return _splits(_CELLS, draw)


_GLYPHS = {  # upright shapes on a unit square (y down); flips map arrow_up <-> arrow_down, L <-> J, T <-> T_down
    "arrow_up": [(0.5, 0.1), (0.85, 0.5), (0.62, 0.5), (0.62, 0.9), (0.38, 0.9), (0.38, 0.5), (0.15, 0.5)],
    "L": [(0.25, 0.1), (0.45, 0.1), (0.45, 0.7), (0.8, 0.7), (0.8, 0.9), (0.25, 0.9)],
    "T": [(0.1, 0.1), (0.9, 0.1), (0.9, 0.3), (0.6, 0.3), (0.6, 0.9), (0.4, 0.9), (0.4, 0.3), (0.1, 0.3)],
}


def _glyph_polys() -> dict[str, list[tuple[float, float]]]:
    polys = dict(_GLYPHS)
    polys["arrow_down"] = [(x, 1 - y) for x, y in _GLYPHS["arrow_up"]]
    polys["J"] = [(1 - x, y) for x, y in _GLYPHS["L"]]
    polys["T_down"] = [(x, 1 - y) for x, y in _GLYPHS["T"]]
    return polys


def glyphs_noisy(seed: int, noise: float = 0.25) -> dict[str, Split]:
    """6 upright glyphs (rotated at most 10 degrees) on noise; a quarter of the training labels are wrong."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    polys = _glyph_polys()

    def draw(cls: str, i: int) -> np.ndarray:
        img = _canvas(rng, 32, 100, 25)
        angle, scale = math.radians(rng.uniform(-10, 10)), rng.uniform(18, 26)
        cx, cy = 16 + rng.uniform(-3, 3), 16 + rng.uniform(-3, 3)
        pts = [(cx + ((x - .5) * math.cos(angle) - (y - .5) * math.sin(angle)) * scale,
                cy + ((x - .5) * math.sin(angle) + (y - .5) * math.cos(angle)) * scale) for x, y in polys[cls]]
        ImageDraw.Draw(img).polygon(pts, fill=tuple(int(v) for v in rng.integers(170, 256, 3)))
        return _to(np.asarray(img), 16)

    out = _splits({c: (50, 25, 25) for c in polys}, draw)
    classes = sorted(out["train"])
    noisy: Split = {c: [] for c in classes}
    for c in classes:
        for img in out["train"][c]:
            wrong = rng.random() < noise
            noisy[classes[(classes.index(c) + 1 + rng.integers(len(classes) - 1)) % len(classes)] if wrong
                  else c].append(img)
    out["train"] = noisy
    return out


def mixed_sizes(seed: int) -> dict[str, Split]:
    """10 photos (short side 128 px); crops of 10-40 px with aspect ratios 1:2 to 2:1, stored at their own size."""
    rng = np.random.default_rng(seed)
    pics = _skimage_images()
    names = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "retina", "brick",
             "grass", "immunohistochemistry"]
    small = {n: _resize(pics[n], 128) for n in names}

    def draw(cls: str, i: int) -> np.ndarray:
        img = small[cls]
        side = math.exp(rng.uniform(math.log(10), math.log(40)))
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w, h = max(6, round(side * math.sqrt(aspect))), max(6, round(side / math.sqrt(aspect)))
        top, left = rng.integers(0, img.shape[0] - h + 1), rng.integers(0, img.shape[1] - w + 1)
        return np.ascontiguousarray(img[top:top + h, left:left + w])

    return _splits({n: (40, 20, 20) for n in names}, draw)


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("patches-d4", "few images per class, rotation/mirror invariant photo patches", patches_d4, 90,
         flags=("d4",)),
    Task("digits", "canonical orientation: flips change the label", digits, 60, flags=("canonical",)),
    Task("color-shapes", "color that matters", color_shapes, 60, flags=("color",)),
    Task("textures-gray", "fine texture, color that does not matter", textures_gray, 60, flags=("texture",)),
    Task("regions-40", "many classes (40), 12 images each", regions_40, 90, flags=("many",)),
    Task("cells-imbalanced", "microscopy-like, any orientation, imbalanced 8:1", cells_imbalanced, 60,
         flags=("d4", "imbalance")),
    Task("glyphs-noisy", "upright glyphs (vertical flips hurt), 25% wrong training labels", glyphs_noisy, 60,
         flags=("canonical", "noisy")),
    Task("mixed-sizes", "photo crops of many sizes and aspect ratios", mixed_sizes, 60, flags=("sizes",)),
]}


def build(name: str, root: Path, seed: int = 0) -> Path:
    """Write task ``name`` under ``root`` (once) and return its folder."""
    from PIL import Image

    task = TASKS[name]
    folder = Path(root) / f"{name}-v{VERSION}-s{seed}"
    done = folder / "task.json"
    if done.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    counts = {}
    for split, classes in task.make(seed).items():
        for cls, images in classes.items():
            d = tmp / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(images):
                Image.fromarray(img).save(d / f"{i:04d}.png")
            counts.setdefault(split, {})[cls] = len(images)
    (tmp / "task.json").write_text(json.dumps({"task": name, "kind": task.kind, "version": VERSION, "seed": seed,
                                               "counts": counts}, indent=1))
    tmp.rename(folder)
    return folder
