"""Learned augmentation policies (``policy``): what each does to a batch; search, ablate and report see it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from torchvision.transforms import v2

from conftest import tiny_space, write_space
from search.tools.ablate import variants
from search.cli import main
from search.core.config import TrialConfig
from search.data.datasets import prepare
from search.core.errors import UserError
from search.tools.report import StudyView, strategy_effect_rows
from search.space.parse import DatasetSpec, load_space, parse_space
from search.strategies import STRATEGIES, TrialContext, active_hooks
from search.strategies.policy import AUTOAUGMENT_POLICIES, PolicyAugment, make_policy
from search.train import loop

POLICIES = ["trivialaugment", "randaugment", "autoaugment", "augmix"]


def _batch(n: int = 16, size: int = 32) -> torch.Tensor:
    """``n`` copies of one structured image: any difference between outputs is a separate draw."""
    ramp = torch.linspace(0, 255, size)
    img = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                       torch.full((size, size), 90.0)])
    img[:, size // 4 : size // 2, size // 4 : size // 2] = 250  # an edge for the geometric ops to move
    return img.to(torch.uint8).expand(n, 3, size, size).clone()


def _augment(config: TrialConfig, batch: torch.Tensor, seed: int) -> torch.Tensor:
    """The batch as the trainer augments it: the hooks the registry gives for ``config``."""
    hooks = [h for h in active_hooks(config, TrialContext(10, [1] * 10, batch.shape[-1], 1, 1, "cpu"))
             if isinstance(h, PolicyAugment)]
    assert len(hooks) == 1
    torch.manual_seed(seed)
    return hooks[0].augment(batch)


@pytest.mark.parametrize("name", POLICIES)
def test_policy_changes_each_image_on_its_own_draw_reproducibly(name: str) -> None:
    batch = _batch()
    config = TrialConfig(policy=name)
    out = _augment(config, batch, seed=0)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert not torch.equal(out, batch)
    assert len({tuple(img.flatten().tolist()) for img in out}) > 1  # not one draw for the whole batch
    assert torch.equal(_augment(config, batch, seed=0), out)
    assert not torch.equal(_augment(config, batch, seed=1), out)


@pytest.mark.parametrize("name", POLICIES)
def test_policy_on_the_smallest_input_size_keeps_the_shape(name: str) -> None:
    """input_size's minimum (4 px) and a gray image (three equal channels): no crash, same shape."""
    batch = _batch(size=4)
    batch[:, 1] = batch[:, 2] = batch[:, 0]
    out = _augment(TrialConfig(policy=name), batch, seed=0)
    assert out.shape == (16, 3, 4, 4) and out.dtype == torch.uint8


def test_none_adds_no_hook() -> None:
    assert make_policy(TrialConfig()) is None
    assert not [h for h in active_hooks(TrialConfig(), TrialContext(2, [1, 1], 8, 1, 1, "cpu"))
                if isinstance(h, PolicyAugment)]


def test_options_reach_torchvision() -> None:
    rand = make_policy(TrialConfig(policy="randaugment", policy_ops=3, policy_magnitude=20))
    assert isinstance(rand, v2.RandAugment) and (rand.num_ops, rand.magnitude) == (3, 20)
    auto = make_policy(TrialConfig(policy="autoaugment", autoaugment_policy="cifar10"))
    assert isinstance(auto, v2.AutoAugment) and auto.policy == v2.AutoAugmentPolicy.CIFAR10
    # Same seed, so the same ops are drawn: only their strength differs.
    batch = _batch(64).float()

    def change(magnitude: int) -> float:
        config = TrialConfig(policy="randaugment", policy_magnitude=magnitude)
        return (_augment(config, batch.to(torch.uint8), seed=3).float() - batch).abs().mean().item()

    assert change(0) < change(20)
    one = _augment(TrialConfig(policy="randaugment", policy_ops=1), batch.to(torch.uint8), seed=3)
    four = _augment(TrialConfig(policy="randaugment", policy_ops=4), batch.to(torch.uint8), seed=3)
    assert not torch.equal(one, four)


def test_trainer_applies_the_policy_to_training_images_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = PolicyAugment.augment

    def spy(self: PolicyAugment, batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(PolicyAugment, "augment", spy)
    spec = DatasetSpec(name="digits", limit=120)
    data = prepare(spec, None, "stretch", torch.device("cpu"))
    n_train = len(data.train_y)
    assert n_train % 32 != 1  # no lone last image dropped
    loop.train(TrialConfig(policy="trivialaugment", width=4, depth=1, epochs=2, batch_size=32), spec,
               evaluate_test=False, data=data)
    assert sum(seen) == 2 * n_train  # every training image once per epoch, never a validation image


def test_space_validation_and_listing_name_the_allowed_values() -> None:
    with pytest.raises(UserError, match="allowed: none, trivialaugment, randaugment, autoaugment, augmix"):
        parse_space({"study": "s", "params": {"policy": "autoaug"}})
    with pytest.raises(UserError, match="params.policy.*'rand'"):
        parse_space({"study": "s", "params": {"policy": {"choices": ["none", "rand"]}}})
    with pytest.raises(UserError, match="allowed: imagenet, cifar10, svhn"):
        parse_space({"study": "s", "params": {"autoaugment_policy": "mnist"}})
    # Spelled in the registry (validation imports no torchvision): exactly torchvision's policies.
    assert list(AUTOAUGMENT_POLICIES) == [p.value for p in v2.AutoAugmentPolicy]
    with pytest.raises(UserError, match="policy_magnitude must be <= 30"):
        parse_space({"study": "s", "params": {"policy_magnitude": 31}})
    listing = CliRunner().invoke(main, ["strategies"]).output
    assert "none / trivialaugment / randaugment / autoaugment / augmix (default none)  [off: none]" in listing
    assert "policy_magnitude" in listing and "autoaugment_policy" in listing
    # What doctor proposes is itself a valid space entry.
    for advice in STRATEGIES.get("policy").advice:
        parse_space({"study": "s", "params": {"policy": advice.propose}})


def test_ablate_switches_the_policy_off() -> None:
    space = parse_space({"study": "s", "params": {
        "policy": {"choices": ["none", "randaugment"]},
        "policy_magnitude": {"int": [5, 15], "when": {"policy": "randaugment"}},
    }})
    config = TrialConfig(policy="randaugment", policy_magnitude=12)
    [(name, off, switched)] = variants(config, space)
    assert (name, off, switched.policy) == ("policy", "none", "none")
    assert variants(TrialConfig(policy="none"), space) == []


def test_search_runs_policies_and_report_shows_them(workdir: Path) -> None:
    doc = tiny_space("policy", budget={"n_trials": 3, "max_epochs": 1}, dataset={"name": "digits", "limit": 150},
                     params={"lr": 0.01, "width": 4, "depth": 1,
                             "policy": {"choices": ["none", "trivialaugment", "randaugment"]},
                             "policy_magnitude": {"int": [5, 15], "when": {"policy": "randaugment"}}},
                     enqueue=[{"policy": "none"}, {"policy": "trivialaugment"},
                              {"policy": "randaugment", "policy_magnitude": 12}])
    write_space(workdir / "space.yaml", doc)
    result = CliRunner().invoke(main, ["-q", "run", "space.yaml", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="policy", storage="sqlite:///studies.db")
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.params["policy"] for t in trials] == ["none", "trivialaugment", "randaugment"]
    assert ["policy_magnitude" in t.params for t in trials] == [False, False, True]  # the when: condition
    rows = [r for r in strategy_effect_rows(StudyView(study, load_space("space.yaml"))) if r["param"] == "policy"]
    assert [(r["choice"], r["complete"]) for r in rows] == [("none", 1), ("trivialaugment", 1), ("randaugment", 1)]
