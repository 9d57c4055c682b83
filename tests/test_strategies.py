"""Each strategy in the catalogue changes what a trial actually does."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
from torch import nn

from search.core.config import TrialConfig
from search.data.color import build_preprocess, channel_stats, convert, make_preprocess
from search.data.datasets import MappedImages
from search.data.transforms import BatchAugment, resize_all, resolve_augment
from search.models.cnn import ConvBlock, SmallCNN
from search.models.factory import create_model
from search.space.parse import DatasetSpec, ObjectiveSpec
from search.train import loop
from search.strategies.optimization import OPTIMIZERS, SCHEDULES

DIGITS = DatasetSpec(name="digits", limit=300)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# ---------------------------------------------------------------- color spaces and channels


@pytest.mark.parametrize("color,channels", [("rgb", 3), ("gray", 1), ("hsv", 3), ("lab", 3)])
def test_color_space_sets_model_input_channels(color: str, channels: int) -> None:
    config = TrialConfig(color=color, width=4, epochs=1)
    result = loop.train(config, DIGITS, evaluate_test=False)
    assert _first_conv(result.model).in_channels == channels
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert result.preprocess(x).shape == (2, channels, 8, 8)


def test_hsv_matches_colorsys() -> None:
    x = torch.rand(1, 3, 4, 5)
    hsv = convert(x, "hsv")
    for i in range(4):
        for j in range(5):
            ref = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            assert torch.allclose(hsv[0, :, i, j], torch.tensor(ref), atol=1e-5)


def test_lab_and_gray_reference_values() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    lab = convert(red, "lab").flatten() * torch.tensor([100.0, 128.0, 128.0])
    # CIE L*a*b* of sRGB red (D65): 53.24, 80.09, 67.20
    assert torch.allclose(lab, torch.tensor([53.24, 80.09, 67.20]), atol=0.05)
    white = convert(torch.ones(1, 3, 1, 1), "lab").flatten()
    assert torch.allclose(white, torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    assert convert(red, "gray").item() == pytest.approx(0.299)


def test_normalization_uses_training_statistics() -> None:
    images = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8)
    pre = make_preprocess("rgb", "dataset", False, images)
    out = pre(images)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    raw = make_preprocess("rgb", "none", False, images)(images)
    assert raw.min() >= 0 and raw.max() <= 1


def test_rgb_statistics_from_histograms_equal_float_sums() -> None:
    images = torch.randint(0, 256, (40, 3, 9, 7), dtype=torch.uint8)
    images[:, 2] = 17  # a constant channel: std clamped, not NaN
    mean, std = channel_stats(images, "rgb")
    x = images.double() / 255.0
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std[:2] == pytest.approx(x.std(dim=(0, 2, 3), correction=0)[:2].tolist(), abs=1e-9)
    assert std[2] == pytest.approx(1e-3)
    # A memory-mapped split (rows gathered on indexing) gives the same, in chunks.
    rows = torch.randperm(len(images))
    mapped_mean, mapped_std = channel_stats(MappedImages(images, rows), "rgb", batch=7)
    assert mapped_mean + mapped_std == pytest.approx(mean + std, abs=1e-12)


def test_whitening_standardizes_each_image_on_every_split() -> None:
    plan = resolve_augment("whiten")
    assert plan.whiten and not plan.random  # deterministic: applied at eval and export too
    pre = build_preprocess("rgb", [0.0] * 3, [1.0] * 3, whiten=plan.whiten)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = pre(x).flatten(1)
    assert torch.allclose(out.mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.std(dim=1), torch.ones(4), atol=1e-3)


# ---------------------------------------------------------------- augmentation


@pytest.mark.parametrize("name", ["crop", "resized_crop", "hflip", "vflip", "rotate", "jitter", "erase"])
def test_each_random_op_changes_images(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    plan = resolve_augment(name if name != "erase" else {"erase": {"p": 1.0}})
    out = BatchAugment(plan, 16)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    changed = (out != x).flatten(1).any(dim=1)
    assert changed.any(), name
    if name in ("hflip", "rotate"):
        # crop's per-image draws are checked offset by offset in test_batched_augment.
        assert not changed.all(), "each image gets its own random draw"


def test_article_comparison_is_one_categorical_choice() -> None:
    crop, flip, whiten = (resolve_augment(v) for v in ("crop", "flip", "whiten"))
    all3 = resolve_augment(["crop", "flip", "whiten"])
    assert [n for n, _ in crop.ops] == ["crop"] and [n for n, _ in flip.ops] == ["hflip"]
    assert whiten.ops == () and whiten.whiten
    assert [n for n, _ in all3.ops] == ["crop", "hflip"] and all3.whiten
    assert resolve_augment("crop+flip+whiten") == all3
    custom = resolve_augment("mine", {"mine": [{"rotate": 30}, "vflip"]})
    assert custom.ops == (("rotate", {"degrees": 30}), ("vflip", {}))


def test_crop_changes_training_inputs_but_not_validation_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}
    real_create = loop.create_model

    def recording_create(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real_create(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, inp: seen["train" if m.training else "eval"].append(inp[0].detach().clone()))
        return model

    monkeypatch.setattr(loop, "create_model", recording_create)
    data = loop.prepare(DIGITS, 16, "stretch", torch.device("cpu"))
    config = TrialConfig(augment="crop", input_size=16, width=4, epochs=1, batch_size=len(data.train_y), seed=3)
    result = loop.train(config, DIGITS, evaluate_test=False)
    clean_train = result.preprocess(data.train_x)
    clean_val = result.preprocess(data.val_x)
    # One full-batch training step: the model saw cropped training images, in a shuffled order.
    trained_on = seen["train"][0]
    matched = sum(bool((trained_on[i] - clean_train).flatten(1).abs().amax(1).min() < 1e-6)
                  for i in range(len(trained_on)))
    assert matched < 0.5 * len(trained_on)
    # Validation passes saw exactly the un-augmented validation images.
    assert any(v.shape == clean_val.shape and torch.allclose(v, clean_val) for v in seen["eval"])


# ---------------------------------------------------------------- input size and aspect


def test_input_size_and_letterbox() -> None:
    wide = torch.full((3, 10, 20), 200, dtype=torch.uint8)
    padded = resize_all([wide], 28, "pad")[0]
    stretched = resize_all([wide], 28, "stretch")[0]
    assert padded.shape == stretched.shape == (3, 28, 28)
    assert (padded[:, :7] == 0).all() and (padded[:, -7:] == 0).all() and (padded[:, 7:21] == 200).all()
    assert (stretched == 200).all()
    result = loop.train(TrialConfig(input_size=28, width=4, epochs=1), DIGITS, evaluate_test=False)
    assert result.input_size == 28


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("norm,layer", [("batchnorm", nn.BatchNorm2d), ("lrn", nn.LocalResponseNorm)])
def test_normalization_layer(norm: str, layer: type) -> None:
    model = create_model(TrialConfig(norm=norm, lrn_size=3), 3, 10, 8)
    found = [m for m in model.modules() if isinstance(m, layer)]
    assert found
    if norm == "lrn":
        assert found[0].size == 3
    bare = create_model(TrialConfig(norm="none"), 3, 10, 8)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.LocalResponseNorm)) for m in bare.modules())


def test_depth_width_residual_dropout() -> None:
    plain = create_model(TrialConfig(depth=3, width=8, dropout=0.3), 3, 10, 32)
    assert isinstance(plain, SmallCNN)
    blocks = [m for m in plain.modules() if isinstance(m, ConvBlock)]
    assert [b.conv1.out_channels for b in blocks] == [8, 16, 32]
    assert plain.dropout.p == 0.3
    res = create_model(TrialConfig(depth=3, width=8, residual=True), 3, 10, 32)
    res_blocks = [m for m in res.modules() if isinstance(m, ConvBlock)]
    assert all(b.residual and hasattr(b, "skip") for b in res_blocks)
    n_conv = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())  # noqa: E731
    assert n_conv(res) > 2 * n_conv(plain) - 1
    # The skip path really carries the input: zeroing the block's convs leaves relu(skip(x)).
    block = ConvBlock(4, 4, "none", 5, residual=True)
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(block(x), torch.relu(x))


# ---------------------------------------------------------------- optimization


def test_optimizer_weight_decay_and_momentum_reach_the_optimizer() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    sgd = OPTIMIZERS.get("sgd")([{"params": params, "lr": 0.1}], TrialConfig(lr=0.1, weight_decay=0.01, momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["weight_decay"] == 0.01 and sgd.param_groups[0]["momentum"] == 0.8
    adamw = OPTIMIZERS.get("adamw")([{"params": params, "lr": 0.1}], TrialConfig(weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05


def _lrs(schedule: str, warmup: int = 0, steps: int = 10, epochs: int = 4) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = SCHEDULES.get(schedule)(opt, TrialConfig(lr=1.0, schedule=schedule, warmup_epochs=warmup), steps, epochs)
    out = []
    for _ in range(steps * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_shape_the_learning_rate() -> None:
    assert set(_lrs("constant")) == {1.0}
    cos = _lrs("cosine")
    assert cos[0] == 1.0 and cos[-1] < 0.01 and all(a >= b for a, b in zip(cos, cos[1:]))
    step = _lrs("step")
    assert step[0] == 1.0 and step[20] == pytest.approx(0.1) and step[-1] == pytest.approx(0.01)
    one = _lrs("onecycle")
    peak = one.index(max(one))
    assert one[0] < max(one) and 0 < peak < len(one) - 1 and one[-1] < one[0]
    warm = _lrs("constant", warmup=1)
    assert warm[0] == pytest.approx(0.1) and warm[9] == pytest.approx(1.0)


def test_label_smoothing_raises_the_floor_of_the_loss() -> None:
    """Smoothed targets cannot be fitted below their entropy, hard ones can. Trained until the plain
    run's loss is well under that floor, the smoothed run stays above it: the loss is smoothed, and
    only when asked (after 2 epochs both losses were above the floor, which told nothing)."""
    k, eps = 10, 0.3
    floor = -((1 - eps + eps / k) * math.log(1 - eps + eps / k) + (k - 1) * (eps / k) * math.log(eps / k))  # 1.18
    base = TrialConfig(width=8, epochs=15, lr=0.01, optimizer="adamw", seed=1)
    plain = loop.train(base, DIGITS, evaluate_test=False)
    smooth = loop.train(TrialConfig(**{**base.to_dict(), "label_smoothing": eps}), DIGITS, evaluate_test=False)
    assert plain.history[-1].train_loss < floor - 0.3, plain.history[-1].train_loss
    assert min(h.train_loss for h in smooth.history) > floor - 1e-3, [h.train_loss for h in smooth.history]


def test_training_is_reproducible_on_cpu() -> None:
    config = TrialConfig(width=4, epochs=2, augment="light", seed=5)
    a = loop.train(config, DIGITS)
    b = loop.train(config, DIGITS)
    assert a.values == b.values and a.history[-1].train_loss == b.history[-1].train_loss
    c = loop.train(TrialConfig(**{**config.to_dict(), "seed": 6}), DIGITS)
    assert c.history[-1].train_loss != a.history[-1].train_loss


def test_nan_loss_is_detected() -> None:
    with pytest.raises(loop.NonFiniteLoss):
        loop.train(TrialConfig(width=4, epochs=3, lr=1e12, optimizer="sgd", norm="none", seed=0), DIGITS,
                   objectives=(ObjectiveSpec(),))
