"""timm backbones: local pretrained weights arrive through the real loading path; fine-tuning modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import tiny_space
from search.core.config import TrialConfig
from search.models import backbones
from search.models.backbones import DISCRIMINATIVE_FACTOR, create_backbone, param_groups, timm_model_names
from search.models.factory import create_model
from search.space.parse import DatasetSpec, parse_space
from search.study.objective import Objective
from search.train.loop import train

NAME = "test_resnet"  # a tiny timm architecture (0.4M params), built here, never downloaded


def _save_checkpoint(weights_dir: Path, suffix: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    source = timm.create_model(NAME)  # ImageNet-shaped: 3 channels, 1000 classes
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    weights_dir.mkdir(exist_ok=True)
    if suffix == ".safetensors":
        save_file(state, str(weights_dir / f"{NAME}.safetensors"))
    else:
        torch.save(state, weights_dir / f"{NAME}{suffix}")
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_load_from_local_file(tmp_path: Path, suffix: str) -> None:
    state = _save_checkpoint(tmp_path / "weights", suffix)
    model = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=tmp_path / "weights")
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)
    assert model.get_classifier().out_features == 5  # fresh head for our classes
    scratch = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=False, weights_dir=None)
    assert not torch.equal(scratch.state_dict()[body[0]], state[body[0]])


def test_gray_input_adapts_the_pretrained_stem(tmp_path: Path) -> None:
    state = _save_checkpoint(tmp_path / "weights", ".safetensors")
    model = create_model(TrialConfig(backbone=NAME, pretrained=True, color="gray"), 1, 4, 32, tmp_path / "weights")
    stem = model.state_dict()["conv1.0.weight"]
    assert stem.shape[1] == 1
    # timm folds the RGB filters into one channel (their sum).
    assert torch.allclose(stem[:, 0], state["conv1.0.weight"].sum(dim=1), atol=1e-5)


def test_missing_weights_are_not_an_error_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A backbone without a local file loads through timm in its trial (tests/test_weights.py), so
    # neither an empty folder, a missing one nor none at all stops a study before it starts.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    doc = tiny_space(params={"backbone": NAME, "pretrained": True}, weights_dir=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    Objective(parse_space(doc), device="cpu").check_ready()
    doc["weights_dir"] = str(tmp_path / "nowhere")
    Objective(parse_space(doc), device="cpu").check_ready()
    assert f"weights_dir {tmp_path / 'nowhere'} does not exist" in caplog.text
    doc.pop("weights_dir")
    Objective(parse_space(doc), device="cpu").check_ready()


def test_backbone_names_are_timms_read_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation reads timm's model names from its source (importing timm takes seconds); they must be
    exactly ``timm.list_models()``; where the source cannot be found, timm itself is asked."""
    timm_model_names.cache_clear()
    try:
        assert timm_model_names() == frozenset(timm.list_models())
        timm_model_names.cache_clear()
        monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
        assert timm_model_names() == frozenset(timm.list_models())
    finally:
        timm_model_names.cache_clear()
    assert backbones.check_backbone("resnet18.a1_in1k") is None
    assert "neither 'none' nor a timm model" in str(backbones.check_backbone("resnet181"))
    # A name the scan would miss is still accepted: timm is asked before a name is refused.
    monkeypatch.setattr(backbones, "timm_model_names", lambda: frozenset())
    assert backbones.check_backbone("resnet18") is None


def test_finetune_modes() -> None:
    model = create_backbone(NAME, num_classes=3, in_chans=3, pretrained=False, weights_dir=None)
    head = set(map(id, model.get_classifier().parameters()))
    groups = param_groups(model, "discriminative_lr", 0.01)
    assert [g["lr"] for g in groups] == [pytest.approx(0.01 * DISCRIMINATIVE_FACTOR), 0.01]
    assert {id(p) for p in groups[1]["params"]} == head
    frozen = param_groups(model, "freeze", 0.01)
    assert len(frozen) == 1 and {id(p) for p in frozen[0]["params"]} == head
    assert all(p.requires_grad == (id(p) in head) for p in model.parameters())


def test_frozen_backbone_trains_only_the_head(tmp_path: Path) -> None:
    _save_checkpoint(tmp_path / "weights", ".safetensors")
    config = TrialConfig(backbone=NAME, pretrained=True, finetune="freeze", input_size=32, epochs=1,
                         batch_size=64, lr=0.01, seed=0)
    before = create_model(config, 3, 10, 32, tmp_path / "weights").state_dict()
    result = train(config, DatasetSpec(name="digits", limit=200), weights_dir=tmp_path / "weights",
                   evaluate_test=False)
    after = result.model.state_dict()
    assert torch.equal(after["conv1.0.weight"], before["conv1.0.weight"])
    # Frozen means frozen: BatchNorm running statistics of the backbone do not drift either.
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"][:10])
