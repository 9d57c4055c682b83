"""drop_path (stochastic depth): one registered strategy, reaching both model families."""

from __future__ import annotations

import pytest
import torch

from search.tools.ablate import variants
from search.core.config import TrialConfig
from search.models.factory import create_model
from search.space.parse import DatasetSpec, parse_space
from search.train import loop


def _residual_branch_drops(model: torch.nn.Module) -> list[float]:
    return [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]


def test_builtin_cnn_drops_residual_branches_more_in_deeper_blocks() -> None:
    config = TrialConfig(residual=True, depth=3, width=4, drop_path=0.3)
    model = create_model(config, 3, 5, 16, drop_path_rate=config.drop_path)
    assert _residual_branch_drops(model) == pytest.approx([0.1, 0.2, 0.3])
    x = torch.rand(8, 3, 16, 16)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b), "training forward passes must drop different branches"
    model.eval()
    assert torch.equal(model(x), model(x)), "evaluation is deterministic"


def test_timm_backbone_receives_the_rate() -> None:
    model = create_model(TrialConfig(backbone="resnet10t"), 3, 4, 32, drop_path_rate=0.2)
    assert max(_residual_branch_drops(model)) == pytest.approx(0.2)


def test_training_with_drop_path_builds_the_model_with_it() -> None:
    config = TrialConfig(residual=True, depth=2, width=4, drop_path=0.2, epochs=1, batch_size=64)
    result = loop.train(config, DatasetSpec(name="digits", limit=200), evaluate_test=False)
    assert _residual_branch_drops(result.model) == pytest.approx([0.1, 0.2])
    plain = loop.train(config.replace(drop_path=0.0), DatasetSpec(name="digits", limit=200), evaluate_test=False)
    assert _residual_branch_drops(plain.model) == []


def test_ablate_switches_it_off_only_where_it_means_something() -> None:
    space = parse_space({"study": "s", "params": {"residual": {"choices": [False, True]},
                                                  "drop_path": {"float": [0.0, 0.3]}}})
    on = TrialConfig(residual=True, drop_path=0.2)
    assert ("drop_path", 0.0) in [(name, off) for name, off, _ in variants(on, space)]
    # Without residual blocks (or a backbone) there is no branch to drop: nothing to ablate.
    inert = TrialConfig(residual=False, drop_path=0.2)
    assert "drop_path" not in [name for name, _, _ in variants(inert, space)]


def test_bad_rate_is_refused_with_its_bounds() -> None:
    with pytest.raises(Exception, match=r"params.drop_path.*<= 0.9"):
        parse_space({"study": "s", "params": {"drop_path": 1.5}})
