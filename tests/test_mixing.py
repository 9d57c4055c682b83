"""Batch-level mixing (``mix``: MixUp, CutMix): soft targets, the trainer's use of them, ablate and doctor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search.tools.ablate import variants
from search.core.config import TrialConfig
from search.space.parse import DatasetSpec, parse_space
from search.strategies import STRATEGIES, TrialContext, active_hooks
from search.train import loop
from search.train.loss import CrossEntropy

DIGITS = DatasetSpec(name="digits", limit=300)
N, CLASSES = 8, 10


def _mixer(kind: str, alpha: float = 1.0):  # noqa: ANN202 - the trial's mix hook, found through the registry
    config = TrialConfig(mix=kind, mix_alpha=alpha)
    hooks = active_hooks(config, TrialContext(CLASSES, [10] * CLASSES, 6, 1, 1, torch.device("cpu")))
    assert len(hooks) == 1
    return hooks[0].mix


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # Distinct labels, so each soft target shows which two images were mixed.
    return torch.randn(N, 3, 6, 6, generator=g), torch.randperm(CLASSES, generator=g)[:N]


def _partners(target: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: its own share (weight of its own class) and the index of the image mixed into it."""
    own = target[torch.arange(N), y]
    other = target.clone()
    other[torch.arange(N), y] = 0
    partner_class = other.argmax(dim=1)
    partner = torch.tensor([int((y == c).nonzero()) for c in partner_class])
    return own, partner


def _is_box_paste(out: torch.Tensor, x: torch.Tensor, partner: torch.Tensor) -> bool:
    """Every pixel (all channels) is either the image's own or its partner's."""
    own = (out == x).all(dim=1)
    pasted = (out == x[partner]).all(dim=1)
    return bool((own | pasted).all())


def test_mixup_blends_two_images_and_their_labels() -> None:
    x, y = _batch()
    torch.manual_seed(0)
    out, target = _mixer("mixup")(x, y)
    assert out.shape == x.shape and target.shape == (N, CLASSES) and target.dtype.is_floating_point
    assert torch.allclose(target.sum(dim=1), torch.ones(N))
    assert ((target > 0).sum(dim=1) == 2).all(), "each target mixes exactly two classes"
    own, partner = _partners(target, y)
    assert (partner != torch.arange(N)).all()
    lam = own.view(N, 1, 1, 1)
    assert torch.allclose(out, lam * x + (1 - lam) * x[partner], atol=1e-5)
    assert 0 < float(own[0]) < 1 and not _is_box_paste(out, x, partner)


def test_cutmix_pastes_a_box_whose_area_is_the_label_share() -> None:
    x, y = _batch()
    torch.manual_seed(3)
    out, target = _mixer("cutmix")(x, y)
    assert torch.allclose(target.sum(dim=1), torch.ones(N))
    own, partner = _partners(target, y)
    assert _is_box_paste(out, x, partner)
    pasted = (out != x).any(dim=1).float().mean(dim=(1, 2))  # share of pixels taken from the partner
    assert torch.allclose(pasted, 1 - own, atol=1e-6)
    assert 0 < float(pasted[0]) < 1


def test_mix_is_reproducible_under_a_seed_and_mixup_cutmix_uses_both() -> None:
    x, y = _batch()
    draws = {}
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        mix = _mixer("mixup_cutmix")
        draws.setdefault(seed, []).append([mix(x, y) for _ in range(12)])
    (first, again), (other,) = draws[5], draws[6]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(first, other))
    kinds = {_is_box_paste(out, x, _partners(target, y)[1]) for out, target in first}
    assert kinds == {True, False}, "mixup_cutmix picks MixUp for some batches and CutMix for others"


def test_mix_none_adds_no_hook() -> None:
    context = TrialContext(CLASSES, [10] * CLASSES, 6, 1, 1, torch.device("cpu"))
    assert active_hooks(TrialConfig(mix="none", mix_alpha=0.7), context) == []


def test_weighted_soft_target_loss_means_what_the_hard_target_loss_means() -> None:
    """With class weights, PyTorch averages soft targets over the batch, hard ones over their weights;
    the trainer's loss gives a one-hot soft target exactly the hard-target value (smoothing included)."""
    torch.manual_seed(0)
    logits, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    onehot = nn.functional.one_hot(y, 4).float()
    weight = torch.tensor([0.2, 0.6, 1.4, 1.8])
    for smoothing in (0.0, 0.1):
        hard = nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(logits, y)
        assert not torch.isclose(nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(logits, onehot), hard)
        ours = CrossEntropy(weight=weight, label_smoothing=smoothing)
        assert torch.isclose(ours(logits, onehot), hard) and torch.isclose(ours(logits, y), hard)
        plain = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, onehot)
        assert torch.isclose(CrossEntropy(label_smoothing=smoothing)(logits, onehot), plain)
    # A mixed target: the weighted sum over both classes, over the batch's weight mass.
    soft = 0.3 * onehot + 0.7 * onehot.roll(1, 0)
    logp = logits.log_softmax(dim=1)
    expected = -(soft * weight * logp).sum() / (soft @ weight).sum()
    assert torch.isclose(CrossEntropy(weight=weight)(logits, soft), expected)


def test_training_with_mix_sees_mixed_batches_and_validates_on_clean_images(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[torch.Tensor]] = {"train": [], "eval": [], "targets": []}
    real_create, real_loss = loop.create_model, loop.CrossEntropy

    def recording_create(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real_create(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, inp: seen["train" if m.training else "eval"].append(inp[0].detach().clone()))
        return model

    class RecordingLoss(real_loss):  # type: ignore[misc, valid-type]
        def forward(self, input, target):  # type: ignore[no-untyped-def]  # noqa: A002
            seen["targets"].append(target.detach().clone())
            return super().forward(input, target)

    monkeypatch.setattr(loop, "create_model", recording_create)
    monkeypatch.setattr(loop, "CrossEntropy", RecordingLoss)
    config = TrialConfig(mix="mixup_cutmix", mix_alpha=1.0, label_smoothing=0.1, imbalance="weighted_loss",
                         input_size=8, width=4, epochs=2, batch_size=64, seed=3)
    result = loop.train(config, DIGITS, evaluate_test=False)
    data = loop.prepare(DIGITS, 8, "stretch", torch.device("cpu"))
    clean_train, clean_val = result.preprocess(data.train_x), result.preprocess(data.val_x)

    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(h.train_loss)) for h in result.history)
    # The loss got soft targets over the 10 classes, most of them mixing two.
    targets = torch.cat(seen["targets"])
    assert targets.shape[1] == 10 and torch.allclose(targets.sum(dim=1), torch.ones(len(targets)))
    assert ((targets > 0).sum(dim=1) == 2).float().mean() > 0.5
    # The model trained on mixed images: most match no clean training image (a CutMix box that
    # lands on the black border of both digits changes nothing, hence not all).
    trained_on = torch.cat(seen["train"])
    matched = sum(bool((trained_on[i] - clean_train).flatten(1).abs().amax(1).min() < 1e-6)
                  for i in range(len(trained_on)))
    assert matched < 0.5 * len(trained_on)
    # Validation passes saw exactly the clean validation images, and the metrics are theirs.
    assert any(v.shape == clean_val.shape and torch.allclose(v, clean_val) for v in seen["eval"])
    again = loop.evaluate(result.model, result.preprocess, data.val_x, data.val_y, 10, torch.device("cpu"))
    assert again.confusion == result.val.confusion and again.loss == pytest.approx(result.val.loss)


def test_ablate_switches_mix_off_and_doctor_proposes_a_valid_entry() -> None:
    space = parse_space({"study": "s", "params": {"mix": {"choices": ["none", "mixup", "cutmix"]},
                                                  "mix_alpha": {"float": [0.1, 1.0]}}})
    config = TrialConfig(mix="cutmix", mix_alpha=0.4)
    [(name, off, switched)] = variants(config, space)
    assert (name, off, switched.mix, switched.mix_alpha) == ("mix", "none", "none", 0.4)
    assert variants(TrialConfig(mix="none"), space) == []
    [advice] = STRATEGIES.get("mix").advice
    assert "overfitting" in advice.findings
    proposed = parse_space({"study": "s", "params": {"mix": advice.propose}}).param("mix")
    assert "none" in proposed.choices and len(proposed.choices) > 1
