"""Weight EMA (``ema_decay``): the average timm keeps is what is evaluated, checkpointed and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from search.tools.ablate import variants
from search.artifacts.bundle import EXPORT_TOLERANCE, load_core
from search.core.config import TrialConfig
from search.data.datasets import prepare
from search.space.parse import parse_space
from search.strategies import TrialContext, active_hooks
from search.strategies.ema import WARMUP_POWER, WeightEMA
from search.train import loop
from test_export import Searched

CPU = torch.device("cpu")


def _context() -> TrialContext:
    return TrialContext(num_classes=2, class_counts=[4, 4], input_size=8, steps_per_epoch=6, epochs=1, device=CPU)


def _ema_hooks(config: TrialConfig) -> list[WeightEMA]:
    return [h for h in active_hooks(config, _context()) if isinstance(h, WeightEMA)]


def test_the_average_is_timms_warmed_up_ema_of_parameters_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    [hooks] = _ema_hooks(TrialConfig(ema_decay=0.6))
    hooks.start(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    for step in range(1, 7):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 3)), torch.randint(0, 2, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        hooks.after_step(model, step)
        # The first step copies the model; then the decay ramps up as 1 - (1 + t)^-3/4, capped at ema_decay.
        decay = 0.0 if step == 1 else min(0.6, 1 - step ** -WARMUP_POWER)
        for k, v in model.state_dict().items():
            expected[k] = v.clone() if not v.is_floating_point() else decay * expected[k] + (1 - decay) * v

    average = hooks.eval_model(model)
    assert average is not model and isinstance(average, nn.Sequential)
    got = average.state_dict()
    assert list(got) == list(model.state_dict())  # same keys: a checkpoint loads it into a fresh model
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    assert int(got["1.num_batches_tracked"]) == 6  # integer buffers are copied, not averaged
    assert not torch.allclose(got["0.weight"], model[0].weight)  # the cap was reached: it lags the model
    assert not torch.allclose(got["1.running_mean"], model[1].running_mean)


def test_off_means_no_hooks_and_bad_decays_are_refused() -> None:
    assert _ema_hooks(TrialConfig()) == []
    with pytest.raises(Exception, match=r"not 1 - decay"):
        parse_space({"study": "s", "params": {"ema_decay": 0.001}})
    for bad in (1.0, -0.5, "high", True):
        with pytest.raises(Exception, match="ema_decay"):
            parse_space({"study": "s", "params": {"ema_decay": bad}})
    space = parse_space({"study": "s", "params": {"ema_decay": {"choices": [0.0, 0.99, 0.9999]}}})
    assert [(p, off) for p, off, _ in variants(TrialConfig(ema_decay=0.99), space)] == [("ema_decay", 0.0)]
    assert variants(TrialConfig(ema_decay=0.0), space) == []


def test_training_evaluates_keeps_and_exports_the_average(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[WeightEMA, nn.Module]] = []
    original = WeightEMA.start

    def spy(self: WeightEMA, model: nn.Module) -> None:
        started.append((self, model))
        original(self, model)

    monkeypatch.setattr(WeightEMA, "start", spy)
    s = Searched(tmp_path, "ema", dataset={"name": "digits", "limit": 200}, budget={"n_trials": 1, "max_epochs": 2},
                 params={"lr": 0.05, "width": 4, "depth": 1, "ema_decay": 0.9})
    [(hooks, raw)] = started
    trial = s.study.trials[0]

    # Retrained in process (same seed, deterministic on CPU): the kept model is the average, not the raw one.
    config = TrialConfig.from_dict(trial.user_attrs["config"])
    assert config.ema_decay == 0.9
    started.clear()
    result = loop.train_space(config, s.space, device=CPU, evaluate_test=False)
    [(hooks, raw)] = started
    assert result.model is hooks.ema.module
    kept = result.model.state_dict()
    assert any(not torch.equal(kept[k], v) for k, v in raw.state_dict().items() if v.is_floating_point())

    # Every epoch is validated on the average, and the trial records that evaluation.
    data = prepare(s.space.dataset, None, "stretch", CPU)
    on_average = loop.evaluate(result.model, result.preprocess, data.val_x, data.val_y, 10, CPU)
    on_raw = loop.evaluate(raw, result.preprocess, data.val_x, data.val_y, 10, CPU)
    assert result.history[-1].val_loss == result.val.loss == pytest.approx(on_average.loss, abs=1e-6)
    assert abs(on_raw.loss - on_average.loss) > 1e-4
    assert trial.user_attrs["val"]["confusion"] == on_average.confusion

    # The kept model and the exported bundle hold the average; the bundle round-trips it.
    checkpoint = s.kept_model(trial.number, tmp_path / "kept")
    for k, v in checkpoint.model.state_dict().items():
        assert torch.allclose(v, kept[k], atol=1e-6), k
    out = tmp_path / "bundle"
    s.cli("export", "ema", "-o", str(out))
    bundle = load_core(out)
    assert bundle.config.ema_decay == 0.9
    for k, v in bundle.model.state_dict().items():
        assert torch.allclose(v, kept[k], atol=1e-6), k
    checks = json.loads((out / "model.json").read_text())["export_checks"]["max_abs_logit_diff"]
    assert set(checks) >= {"torchscript", "onnx"} and max(checks.values()) <= EXPORT_TOLERANCE
    with torch.no_grad():
        expected = loop.predict(result.model, result.preprocess, data.val_x, CPU)
    assert torch.allclose(bundle.probabilities(data.val_x), expected.softmax(1), atol=1e-5)


def test_the_fused_update_equals_timms_model_ema_v3_with_warmup() -> None:
    """The foreach average matches timm's ModelEmaV3 (warm-up, floating buffers averaged, integer
    buffers copied) step by step, in two fused ops per step instead of a state-dict walk."""
    from timm.utils import ModelEmaV3

    from benchmarks.op_count import OpCounter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    [hooks] = _ema_hooks(TrialConfig(ema_decay=0.9))
    hooks.start(model)
    reference = ModelEmaV3(model, decay=0.9, use_warmup=True, warmup_power=WARMUP_POWER)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    model.train()
    for step in range(1, 41):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        counter = OpCounter()
        with counter:
            hooks.after_step(model, step)
        assert counter.count == 2  # _foreach_lerp_ + _foreach_copy_
        reference.update(model, step=step)
        assert hooks.ema.decay_at(step) == reference.get_decay(step)
        ours, theirs = hooks.eval_model(model).state_dict(), reference.module.state_dict()
        assert list(ours) == list(theirs)
        for k, v in theirs.items():
            assert torch.allclose(ours[k], v, rtol=1e-5, atol=1e-6), (step, k)
    assert reference.get_decay(40) == 0.9  # warm-up done: the cap holds
    assert int(ours["1.num_batches_tracked"]) == 40
    assert not torch.allclose(ours["1.running_var"], model[1].running_var)  # averaged, not copied
