"""Batched augmentation ops (one vectorised op per batch): equal to torchvision's own op on the
same draws, an independent draw per image, seeded, any batch size, dtype/shape/device kept."""

from __future__ import annotations

import inspect

import pytest
import torch
from torchvision.transforms import v2

from search.data.transforms import (AUGMENT_OPS, BatchAugment, crop_at, erase_at, erase_boxes, resolve_augment,
                                   rotate_by)

BATCHED = [name for name in AUGMENT_OPS if AUGMENT_OPS.get(name).batched is not None]


def _images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _offset(out: torch.Tensor, padded: torch.Tensor) -> tuple[int, int]:
    """Where ``out`` sits in ``padded`` (the first matching offset)."""
    s = out.shape[-1]
    for t in range(padded.shape[-2] - s + 1):
        for left in range(padded.shape[-1] - s + 1):
            if torch.equal(padded[:, t : t + s, left : left + s], out):
                return t, left
    raise AssertionError("crop not found in the padded image")


def test_the_batched_ops_are_registered_with_their_per_image_factory() -> None:
    assert {"crop", "hflip", "vflip", "erase", "rotate"} <= set(BATCHED)
    for name in BATCHED:
        op = AUGMENT_OPS.get(name)
        # Same arguments, so validation (which reads the factory) covers the batched version too.
        assert inspect.signature(op.batched).parameters.keys() == inspect.signature(op.factory).parameters.keys()


def test_crop_at_a_forced_offset_equals_torchvision_crop_of_the_reflect_padded_image() -> None:
    x = torch.randint(0, 256, (3, 3, 9, 11), dtype=torch.uint8)
    pad, size = 3, 8
    padded = v2.functional.pad(x, [pad], padding_mode="reflect")
    for top in range(9 + 2 * pad - size + 1):
        for left in range(11 + 2 * pad - size + 1):
            out = crop_at(x, torch.full((3,), top), torch.full((3,), left), size, pad)
            assert torch.equal(out, v2.functional.crop(padded, top, left, size, size)), (top, left)
    tops, lefts = torch.tensor([0, 6, 2]), torch.tensor([9, 0, 4])
    out = crop_at(x, tops, lefts, size, pad)
    for i in range(3):  # a different offset per image
        assert torch.equal(out[i], v2.functional.crop(padded[i], int(tops[i]), int(lefts[i]), size, size))


def test_random_crop_draws_an_offset_per_image_over_the_torchvision_range() -> None:
    torch.manual_seed(1)
    x = _images(64)
    pad = 2  # crop's default 0.125 of 16
    out = BatchAugment(resolve_augment("crop"), 16)(x)
    padded = v2.functional.pad(x, [pad], padding_mode="reflect")
    offsets = {_offset(out[i], padded[i]) for i in range(64)}
    assert len(offsets) > 5, "each image gets its own offset"
    assert all(0 <= t <= 2 * pad and 0 <= left <= 2 * pad for t, left in offsets)


@pytest.mark.parametrize("name,dim", [("hflip", -1), ("vflip", -2)])
def test_flip_flips_the_images_of_its_mask_and_leaves_the_others(name: str, dim: int) -> None:
    torch.manual_seed(2)
    x = _images(64)
    out = BatchAugment(resolve_augment(name), 16)(x)
    flipped = torch.tensor([torch.equal(o, i.flip(dim)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ same).all(), "every image is either flipped or unchanged"
    assert 10 < int(flipped.sum()) < 54, "p=0.5 per image, not one draw for the batch"
    assert not BatchAugment(resolve_augment({name: {"p": 0.0}}), 16)(x).ne(x).any()
    assert torch.equal(BatchAugment(resolve_augment({name: {"p": 1.0}}), 16)(x), x.flip(dim))


def test_erase_at_equals_torchvision_erase_and_boxes_follow_random_erasing_ranges() -> None:
    x = _images(3)
    boxes = torch.tensor([[2, 3, 5, 4], [0, 0, 0, 0], [10, 1, 6, 15]])
    out = erase_at(x, boxes)
    for img, o, (t, left, h, w) in zip(x, out, boxes.tolist()):
        assert torch.equal(o, v2.functional.erase(img, t, left, h, w, torch.tensor(0, dtype=torch.uint8)))
    torch.manual_seed(3)
    drawn = erase_boxes(4000, 32, 32, p=0.5)
    used = drawn[drawn[:, 2] > 0].float()
    assert 0.45 < len(used) / 4000 < 0.55
    area = used[:, 2] * used[:, 3] / (32 * 32)
    assert area.min() > 0.01 and area.max() < 0.36  # scale (0.02, 0.33), rounded to pixels
    aspect = used[:, 2] / used[:, 3]
    assert aspect.min() > 0.2 and aspect.max() < 5.0 and aspect.min() < 0.5 and aspect.max() > 2.0
    assert (used[:, 0] + used[:, 2] <= 32).all() and (used[:, 1] + used[:, 3] <= 32).all()
    assert len({tuple(b) for b in used.tolist()}) > 100, "a box per image"


@pytest.mark.parametrize("shape", [(16, 16), (12, 20)])
def test_rotate_by_equals_torchvision_rotate_at_each_images_angle(shape: tuple[int, int]) -> None:
    torch.manual_seed(7)
    x = torch.randint(0, 256, (40, 3, *shape), dtype=torch.uint8)
    angles = torch.empty(40).uniform_(-30, 30)
    angles[:4] = torch.tensor([0.0, 90.0, -90.0, 180.0])  # torchvision's exact-angle shortcuts
    out = rotate_by(x, angles)
    for img, o, a in zip(x, out, angles.tolist()):
        assert torch.equal(o, v2.functional.rotate(img, a, fill=0)), a
    assert (out != x).flatten(1).any(1).sum() > 30  # and it does rotate


def test_random_rotate_draws_an_angle_per_image_within_degrees() -> None:
    x = _images(64, size=24)
    torch.manual_seed(6)
    out = BatchAugment(resolve_augment({"rotate": 20}), 24)(x)
    torch.manual_seed(6)
    angles = torch.empty(64).uniform_(-20, 20)  # the op's only draw: one angle per image
    assert torch.equal(out, rotate_by(x, angles))
    assert angles.abs().max() <= 20 and angles.std() > 5


@pytest.mark.parametrize("n", [1, 2, 64])
@pytest.mark.parametrize("value", ["light", "crop+hflip+vflip+erase+rotate", "standard", "heavy"])
def test_batches_keep_dtype_shape_device_and_are_seeded(value: str, n: int) -> None:
    x = _images(n)
    aug = BatchAugment(resolve_augment(value), 16)
    torch.manual_seed(4)
    a = aug(x)
    torch.manual_seed(4)
    b = aug(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape and a.device == x.device
    assert torch.equal(a, b)


def test_ops_without_a_batched_version_run_per_image_in_plan_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # crop (batched), jitter (per image), hflip (batched): three stages, in that order.
    aug = BatchAugment(resolve_augment("crop+jitter+hflip"), 16)
    assert len(aug.stages) == 3
    per_image = BatchAugment(resolve_augment("crop+jitter+hflip"), 16, per_image=True)
    assert len(per_image.stages) == 1
    x = _images(8)
    calls: list[tuple[str, tuple[int, ...]]] = []

    def spy(cls):  # type: ignore[no-untyped-def]
        real = cls.__call__

        def call(self, *inputs):  # type: ignore[no-untyped-def]
            calls.append((cls.__name__, tuple(inputs[0].shape)))
            return real(self, *inputs)

        monkeypatch.setattr(cls, "__call__", call)

    for cls in (v2.ColorJitter, v2.RandomCrop, v2.RandomHorizontalFlip):
        spy(cls)
    aug(x)
    assert calls == [("ColorJitter", (3, 16, 16))] * 8, "only jitter runs per image"
    calls.clear()
    per_image(x)
    assert [name for name, _ in calls[:3]] == ["RandomCrop", "ColorJitter", "RandomHorizontalFlip"]
    assert len(calls) == 24


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_seed_same_augmentation_on_cuda_as_on_the_cpu() -> None:
    x = _images(32)
    aug = BatchAugment(resolve_augment("crop+hflip+vflip+erase"), 16)
    torch.manual_seed(5)
    cpu = aug(x)
    torch.manual_seed(5)
    gpu = aug(x.cuda())
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    # Rotation samples a float grid: the GPU's arithmetic may round a rare boundary pixel the other way.
    angles = torch.empty(32).uniform_(-30, 30)
    differ = (rotate_by(x.cuda(), angles).cpu() != rotate_by(x, angles)).any(1).float().mean()
    assert differ < 0.01
