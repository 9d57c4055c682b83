"""Input strategies: augmentation, input size and aspect, color space, normalization."""

from __future__ import annotations

from typing import Any

from search.data.color import COLOR_SPACES, NORMALIZERS, channels_of
from search.data.transforms import ASPECTS, AUGMENT_SETS, check_augment
from search.strategies.base import Param, Strategy, register


def smallest(name: str):  # noqa: ANN201 - returns an "off" function
    """Ablate's reference for a size: the smallest value the space searches (None: nothing smaller)."""

    def off(value: Any, space: Any) -> Any:
        spec = space.param(name) if space is not None else None
        if spec is None or spec.kind == "fixed":
            return None
        if spec.kind == "choices":
            numbers = [c for c in spec.choices if c is not None]
            low = min(numbers) if numbers else None
        else:
            low = int(spec.low)
        return None if low is None or value is None or low >= value else low

    return off


register(Strategy(
    "augment", Param(str, "none", "augmentation set or list of ops", choices=lambda: list(AUGMENT_SETS),
                     list_ok=True, check=check_augment),
    "augmentation", "data augmentation: crop, flip, rotation, color jitter, erasing, whitening (sets or op lists)",
    off="none",
))
register(Strategy(
    "input_size", Param(int, None, "square input size in pixels (null: the images' own size)", low=4, high=1024,
                        nullable=True),
    "input", "input size: 28/64/128/224 px", off=smallest("input_size"), off_help="the smallest size searched",
))
register(Strategy(
    "aspect", Param(str, "stretch", "resize mode", choices=ASPECTS), "input",
    "stretch to a square or keep the aspect ratio and pad", off="stretch",
))
register(Strategy(
    "color", Param(str, "rgb", "color space", choices=COLOR_SPACES.names), "input",
    "color space: fewer or other channels (gray, HSV, Lab)",
    # Color has no "off": the reference is the other common choice (does color matter at all?).
    off=lambda value, space: "gray" if value == "rgb" else "rgb", off_help="gray (rgb when not rgb)",
    channels=channels_of,
))
register(Strategy(
    "normalize", Param(str, "dataset", "per-channel normalization", choices=NORMALIZERS.names), "input",
    "per-channel normalization: the dataset's statistics, ImageNet's, or none", off="dataset",
))
