"""Flip test-time augmentation (``tta: flip``): evaluation, predict and the exported graphs average x and its mirror."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from search.tools.ablate import variants
from search.artifacts.bundle import EXPORT_TOLERANCE, load_core
from search.cli import main
from search.core.config import TrialConfig
from search.data.datasets import prepare
from search.models.factory import create_model
from search.space.parse import DatasetSpec, parse_space
from search.strategies import inference_model
from search.models.tta import FlipTTA
from search.train import loop
from test_export import Searched

CPU = torch.device("cpu")


def test_flip_averages_the_logits_of_the_image_and_its_mirror_and_adds_no_weights() -> None:
    torch.manual_seed(0)
    model = create_model(TrialConfig(width=4, depth=1), 3, 10, 8, None).eval()
    assert inference_model(TrialConfig(), model) is model
    wrapped = inference_model(TrialConfig(tta="flip"), model)
    assert isinstance(wrapped, FlipTTA)
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        assert torch.allclose(wrapped(x), expected, atol=1e-6)
        assert not torch.allclose(wrapped(x), model(x), atol=1e-3)  # random images are not symmetric
    # Nothing of its own: its state is exactly the model's (checkpoints save the bare model).
    assert [p for p in wrapped.parameters()] == [p for p in model.parameters()]
    assert list(wrapped.named_parameters(recurse=False)) == [] and list(wrapped.named_buffers(recurse=False)) == []
    assert list(wrapped.state_dict()) == [f"model.{k}" for k in model.state_dict()]


def test_values_and_ablation() -> None:
    with pytest.raises(Exception, match="allowed: none, flip"):
        parse_space({"study": "s", "params": {"tta": "vertical"}})
    space = parse_space({"study": "s", "params": {"tta": {"choices": ["none", "flip"]}}})
    assert [(p, off) for p, off, _ in variants(TrialConfig(tta="flip"), space)] == [("tta", "none")]
    assert variants(TrialConfig(tta="none"), space) == []


def test_training_validates_with_flip_and_keeps_the_bare_model() -> None:
    config = TrialConfig(width=4, depth=1, epochs=1, lr=0.05, tta="flip")
    result = loop.train(config, DatasetSpec(name="digits", limit=200), evaluate_test=True)
    assert not isinstance(result.model, FlipTTA)
    data = prepare(DatasetSpec(name="digits", limit=200), None, "stretch", CPU)
    flipped = loop.evaluate(FlipTTA(result.model), result.preprocess, data.val_x, data.val_y, 10, CPU)
    plain = loop.evaluate(result.model, result.preprocess, data.val_x, data.val_y, 10, CPU)
    assert result.val.loss == pytest.approx(flipped.loss, abs=1e-6) and result.history[-1].val_loss == result.val.loss
    assert abs(plain.loss - flipped.loss) > 1e-4
    test = loop.evaluate(FlipTTA(result.model), result.preprocess, data.test_x, data.test_y, 10, CPU)
    assert result.test is not None and result.test.confusion == test.confusion


def test_exported_torchscript_onnx_and_predict_contain_the_flip(tmp_path: Path) -> None:
    s = Searched(tmp_path, "tta", dataset={"name": "digits", "limit": 200}, budget={"n_trials": 1, "max_epochs": 1},
                 params={"lr": 0.05, "width": 4, "depth": 1, "tta": "flip", "input_size": 12})
    out = tmp_path / "bundle"
    s.cli("export", "tta", "-o", str(out))
    bundle = load_core(out)
    assert bundle.config.tta == "flip" and not isinstance(bundle.model, FlipTTA)
    checks = json.loads((out / "model.json").read_text())["export_checks"]["max_abs_logit_diff"]
    assert set(checks) >= {"torchscript", "onnx"} and max(checks.values()) <= EXPORT_TOLERANCE

    # The weights file is the bare model's (load_core loaded it strictly into a fresh model).
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert sorted(fh.keys()) == sorted(bundle.model.state_dict())

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (6, 3, 12, 12), generator=g, dtype=torch.uint8)  # not mirror-symmetric
    with torch.no_grad():
        x = bundle.preprocess(images)
        averaged = (bundle.model(x) + bundle.model(x.flip(-1))) / 2
        bare = bundle.model(x)
    assert (averaged - bare).abs().max() > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(images), averaged, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images.float().div(255.0).numpy()})[0]
    assert np.abs(logits - averaged.numpy()).max() < 1e-5

    # predict on image files: the averaged probabilities.
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    result = CliRunner().invoke(main, ["predict", str(out), *(str(tmp_path / f"{i}.png") for i in range(6)), "--json"])
    assert result.exit_code == 0, result.output
    got = torch.tensor([[r["probabilities"][c] for c in bundle.classes] for r in json.loads(result.output)])
    assert torch.allclose(got, averaged.softmax(1), atol=1e-5)
