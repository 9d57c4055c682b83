"""Class imbalance (``imbalance``): inverse-frequency loss weights, the balanced sampler, their effect, ablate."""

from __future__ import annotations

import pytest
import torch

from search.tools.ablate import variants
from search.core.config import TrialConfig
from search.space.parse import DatasetSpec, parse_space
from search.strategies import STRATEGIES, TrainHooks, TrialContext, active_hooks
from search.train import loop

CPU = torch.device("cpu")
# Binary, about 1 in 6 is the "target" class; 600 images leave ~16 targets among 131 validation images.
RARE = DatasetSpec(name="shapes-rare", limit=600)


def _hooks(value: str, counts: list[int]) -> TrainHooks:
    [hooks] = active_hooks(TrialConfig(imbalance=value), TrialContext(len(counts), counts, 8, 1, 1, CPU))
    return hooks


def test_none_adds_no_hook() -> None:
    assert active_hooks(TrialConfig(imbalance="none"), TrialContext(2, [10, 1], 8, 1, 1, CPU)) == []


def test_weighted_loss_weights_are_inverse_frequency_with_mean_one() -> None:
    counts = [200, 20, 0, 50]
    weights = _hooks("weighted_loss", counts).class_weights()
    assert weights is not None and weights.dtype == torch.float32 and weights.shape == (4,)
    # weight x count is the same for every class that has images: each class weighs the same in total.
    products = [float(w) * n for w, n in zip(weights, counts) if n]
    assert products == pytest.approx([products[0]] * 3)
    assert float(weights[[0, 1, 3]].mean()) == pytest.approx(1.0)
    assert float(weights[2]) == 0.0, "a class without images gets no weight (not 1/0)"
    assert torch.allclose(_hooks("weighted_loss", [7, 7, 7]).class_weights(), torch.ones(3))


def test_balanced_sampler_draws_classes_about_equally_from_10_to_1() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.zeros(1000, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    sampler = _hooks("balanced_sampler", [1000, 100])
    order = sampler.train_order(labels, torch.Generator().manual_seed(1))
    assert order is not None and order.shape == (1100,) and order.dtype == torch.long
    assert int(order.min()) >= 0 and int(order.max()) < len(labels)
    share = float(labels[order].float().mean())
    # Binomial(1100, 1/2): one standard deviation is 0.015; a plain shuffle would give 100/1100 = 0.09.
    assert abs(share - 0.5) < 0.06
    drawn = labels[order]
    assert len(order.unique()) < len(order), "with replacement: minority images come back"
    assert set(order[drawn == 1].unique().tolist()) <= set(torch.nonzero(labels == 1).flatten().tolist())
    # Seeded by the trainer's generator: the same seed gives the same epoch, another seed another.
    assert torch.equal(sampler.train_order(labels, torch.Generator().manual_seed(1)), order)
    assert not torch.equal(sampler.train_order(labels, torch.Generator().manual_seed(2)), order)


def test_balanced_sampler_skips_classes_without_images() -> None:
    labels = torch.tensor([0] * 90 + [2] * 10)  # class 1 has no training images
    order = _hooks("balanced_sampler", [90, 0, 10]).train_order(labels, torch.Generator().manual_seed(0))
    share = float((labels[order] == 2).float().mean())
    assert abs(share - 0.5) < 0.15  # 100 draws: one standard deviation is 0.05


def _minority(value: str) -> tuple[float, float]:
    """Minority-class recall and mean predicted minority probability on the validation split."""
    config = TrialConfig(imbalance=value, input_size=16, width=4, depth=2, epochs=2, lr=0.01, batch_size=32, seed=0)
    result = loop.train(config, RARE, evaluate_test=False)
    data = loop.prepare(RARE, 16, "stretch", CPU)
    probability = loop.predict(result.model, result.preprocess, data.val_x, CPU).softmax(dim=1)[:, 1]
    confusion = result.val.confusion
    return confusion[1][1] / sum(confusion[1]), float(probability.mean())


def test_remedies_raise_minority_recall_against_none_with_the_same_seed() -> None:
    """Same seed, same initial weights: only the remedy differs. A few epochs on ~1:5 data leave the
    plain model predicting (almost) only the majority; both remedies shift predictions towards the
    minority. Asserted on the mean predicted minority probability (a smooth measure, margin 0.1;
    measured ~0.09 -> ~0.4) and on recall (measured 0 -> >0.8), so one borderline image cannot flip it."""
    recall_none, p_none = _minority("none")
    for remedy in ("weighted_loss", "balanced_sampler"):
        recall, p = _minority(remedy)
        assert p > p_none + 0.1, (remedy, p, p_none)
        assert recall > recall_none, (remedy, recall, recall_none)


def test_ablate_switches_imbalance_off_and_doctor_proposes_a_valid_entry() -> None:
    space = parse_space({"study": "s", "params": {"imbalance": {"choices": ["none", "weighted_loss",
                                                                            "balanced_sampler"]}}})
    for value in ("weighted_loss", "balanced_sampler"):
        [(name, off, switched)] = variants(TrialConfig(imbalance=value), space)
        assert (name, off, switched.imbalance) == ("imbalance", "none", "none")
    assert variants(TrialConfig(imbalance="none"), space) == []
    [advice] = STRATEGIES.get("imbalance").advice
    assert "imbalance" in advice.findings
    proposed = parse_space({"study": "s", "params": {"imbalance": advice.propose}}).param("imbalance")
    assert set(proposed.choices) == {"none", "weighted_loss", "balanced_sampler"}
