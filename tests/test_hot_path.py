"""The training step's bookkeeping: statistics kept on the device, read once per epoch, with the
non-finite check's guarantees kept (caught at the latest at the epoch's end, named by its step)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import torch
from torch import nn

from search.core.config import TrialConfig
from search.core.spec import DatasetSpec
from search.space.parse import parse_space
from search.study.objective import Objective
from search.train import loop, stats
from search.train.loss import CrossEntropy

DIGITS = DatasetSpec(name="digits", limit=300)
CPU = torch.device("cpu")
CONFIG = dict(width=4, depth=1, batch_size=8, lr=0.01, seed=0)


class _Breaks(CrossEntropy):
    """The loss of call ``at`` (1-based) is NaN, or its gradient infinite; counts its calls."""

    calls = 0
    at = 0
    how = "loss"

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        type(self).calls += 1
        out = super().forward(input, target)
        if type(self).calls == type(self).at:
            if type(self).how == "loss":
                return out * float("nan")
            input.register_hook(lambda g: g * float("inf"))
        return out


@pytest.fixture
def breaks(monkeypatch: pytest.MonkeyPatch) -> type[_Breaks]:
    monkeypatch.setattr(loop, "CrossEntropy", _Breaks)
    _Breaks.calls, _Breaks.at, _Breaks.how = 0, 0, "loss"
    return _Breaks


def _steps_per_epoch() -> int:
    data = loop.prepare(DIGITS, None, "stretch", CPU)
    n, b = len(data.train_y), CONFIG["batch_size"]
    return n // b + (1 if n % b > 1 else 0)


@pytest.mark.parametrize("check_every", [None, 0], ids=["cpu-periodic", "epoch-end-as-on-cuda"])
@pytest.mark.parametrize("how", ["loss", "gradient norm"])
def test_a_nan_is_caught_with_the_step_it_happened_at(breaks: type[_Breaks], monkeypatch: pytest.MonkeyPatch,
                                                      check_every: int | None, how: str) -> None:
    steps = _steps_per_epoch()
    assert steps > stats.CHECK_EVERY_CPU + 3
    if check_every is not None:  # the CUDA setting: nothing is read back before the epoch's end
        monkeypatch.setattr(stats, "CHECK_EVERY_CPU", check_every)
    breaks.at, breaks.how = steps + 3, how  # epoch 2, step 3
    with pytest.raises(loop.NonFiniteLoss) as err:
        loop.train(TrialConfig(**CONFIG, epochs=3), DIGITS, device=CPU)
    assert (err.value.epoch, err.value.step) == (2, 3)
    assert str(err.value).startswith(f"{how} became ") and str(err.value).endswith("at epoch 2, step 3")
    if check_every is None:  # read every 16 steps on the CPU: stopped well before the epoch's end
        assert breaks.calls == steps + stats.CHECK_EVERY_CPU
    else:  # read once per epoch: the epoch ran to its end, then the step was named
        assert breaks.calls == 2 * steps


def test_the_trial_is_pruned_with_the_step_in_its_reason(breaks: type[_Breaks], tmp_path: Any) -> None:
    breaks.at = 5
    space = parse_space({"study": "nan", "dataset": {"name": "digits", "limit": 300},
                         "budget": {"n_trials": 1, "max_epochs": 2}, "params": {**CONFIG}})
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, device="cpu"), n_trials=1, catch=())
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["fail_reason"] == "non-finite loss: loss became nan at epoch 1, step 5"


def test_epoch_statistics_match_a_step_by_step_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss, accuracy and largest gradient norm read at the epoch's end are the per-step values'."""
    seen: list[tuple[float, int, int, float]] = []
    original = stats.StepStats.record

    def spy(self: stats.StepStats, i: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
            grads: list[torch.Tensor]) -> None:
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        seen.append((float(loss.detach()), int((logits.argmax(1) == labels).sum()), len(labels), norm))
        original(self, i, loss, logits, labels, grads)

    monkeypatch.setattr(stats.StepStats, "record", spy)
    result = loop.train(TrialConfig(**CONFIG, epochs=2, grad_clip=0.5), DIGITS, device=CPU, evaluate_test=False)
    steps = _steps_per_epoch()
    assert len(seen) == 2 * steps
    for epoch, log in enumerate(result.history):
        rows = seen[epoch * steps : (epoch + 1) * steps]
        images = sum(r[2] for r in rows)
        assert log.train_loss == pytest.approx(sum(r[0] * r[2] for r in rows) / images, rel=1e-5)
        assert log.train_accuracy == pytest.approx(sum(r[1] for r in rows) / images, abs=1e-9)
        assert log.grad_norm_max == pytest.approx(max(r[3] for r in rows), rel=1e-5)
        assert log.grad_norm_max > 0.5  # the norm before clipping is what is logged


def test_clipping_uses_the_recorded_norm() -> None:
    model = nn.Linear(4, 3)
    params = list(model.parameters())
    nn.functional.cross_entropy(model(torch.randn(8, 4) * 50), torch.randint(0, 3, (8,))).backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in params])
    s = stats.StepStats(len(params), CPU)
    s.begin([0], [8])
    s.record(0, torch.tensor(1.0), torch.randn(8, 3), torch.zeros(8, dtype=torch.long), [p.grad for p in params])
    assert torch.allclose(s.total_norm(0), expected)
    # A parameter without a gradient this step: its total norm still counts, the rest of the row is zero.
    s.record(0, torch.tensor(1.0), torch.randn(8, 3), torch.zeros(8, dtype=torch.long), [params[0].grad])
    assert torch.allclose(s.total_norm(0), params[0].grad.norm())


def test_optimizers_use_fused_kernels_on_the_gpu_only() -> None:
    from types import SimpleNamespace

    from search.strategies.optimization import fused_kernels

    gpu = SimpleNamespace(is_cuda=True, is_floating_point=lambda: True)
    assert fused_kernels([{"params": [gpu, gpu]}, {"params": [gpu]}]) == {"fused": True}
    assert fused_kernels([{"params": list(nn.Linear(2, 2).parameters())}]) == {}
    assert fused_kernels([{"params": [gpu]}, {"params": list(nn.Linear(2, 2).parameters())}]) == {}
