"""``compile: true``: the training steps call a torch.compile wrapper; its time counts in the trial's cost.

Inductor's C++ code generation takes minutes on this CPU, so the plumbing is tested with the
``eager`` backend (the same Dynamo graph capture, run with PyTorch's own kernels, so its numbers
equal plain training's); ``benchmarks.gpu`` compiles with inductor.
"""

from __future__ import annotations

import optuna
import pytest
import torch

from search.core.config import TrialConfig
from search.core.spec import DatasetSpec
from search.space.parse import parse_space
from search.strategies import STRATEGIES
from search.strategies import compile as compile_strategy
from search.study.objective import Objective
from search.tools.doctor.remedies import advised
from search.train import loop, stats

DIGITS = DatasetSpec(name="digits", limit=300)
CONFIG = dict(width=4, depth=1, batch_size=16, lr=0.01, seed=0, epochs=2)


@pytest.fixture
def eager_backend(monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    monkeypatch.setattr(compile_strategy, "BACKEND", "eager")
    wrappers: list[torch.nn.Module] = []
    original = compile_strategy.CompiledForward.train_forward

    def spy(self: compile_strategy.CompiledForward, model: torch.nn.Module) -> torch.nn.Module:
        wrappers.append(original(self, model))
        return wrappers[-1]

    monkeypatch.setattr(compile_strategy.CompiledForward, "train_forward", spy)
    torch._dynamo.reset()
    return wrappers


def test_compiled_training_uses_the_wrapper_and_keeps_the_plain_model(eager_backend: list[torch.nn.Module],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[list[int]] = []
    original = stats.StepStats.begin
    monkeypatch.setattr(stats.StepStats, "begin",
                        lambda self, steps, batch_sizes: (sizes.append(list(batch_sizes)), original(self, steps,
                                                                                                      batch_sizes))[1])
    result = loop.train(TrialConfig(**CONFIG, compile=True), DIGITS, device=torch.device("cpu"))
    (wrapper,) = eager_backend
    assert wrapper._orig_mod is result.model  # the compiled module shares the kept model's weights
    assert not any(k.startswith("_orig_mod") for k in result.model.state_dict())  # exports see plain keys
    n_train = len(loop.prepare(DIGITS, None, "stretch", torch.device("cpu")).train_y)
    assert n_train % 16 > 1  # plain training would take a partial last batch
    # One static shape: every step a full batch, the partial last one dropped.
    assert sizes == [[16] * (n_train // 16)] * 2
    assert 0 < result.compile_seconds <= result.history[0].seconds  # counted inside epoch 1's time


def test_compiled_training_trains_the_same_model(eager_backend: list[torch.nn.Module]) -> None:
    """Batches that divide the split (nothing dropped): compiled and plain training agree."""
    n_train = len(loop.prepare(DIGITS, None, "stretch", torch.device("cpu")).train_y)
    config = TrialConfig(**{**CONFIG, "batch_size": 21})
    assert n_train % 21 == 0
    compiled = loop.train(config.replace(compile=True), DIGITS, device=torch.device("cpu"))
    plain = loop.train(config, DIGITS, device=torch.device("cpu"))
    assert plain.compile_seconds == 0.0 and len(eager_backend) == 1
    for a, b in zip(compiled.history, plain.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.grad_norm_max == pytest.approx(b.grad_norm_max, rel=1e-5)
    assert compiled.val.confusion == plain.val.confusion


def test_the_trial_records_its_compile_time(eager_backend: list[torch.nn.Module]) -> None:
    space = parse_space({"study": "c", "dataset": {"name": "digits", "limit": 300},
                         "budget": {"n_trials": 1, "max_epochs": 2},
                         "params": {**{k: v for k, v in CONFIG.items() if k != "epochs"}, "compile": True}})
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, device="cpu"), n_trials=1, catch=())
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert 0 < trial.user_attrs["compile_seconds"] <= trial.user_attrs["history"][0]["seconds"]


def test_compile_is_one_registered_strategy_with_off_and_advice() -> None:
    strategy = STRATEGIES.get("compile")
    assert strategy.off is False and strategy.param.kind is bool and strategy.group == "run"
    assert [name for name, _ in advised(["input_size"])].count("compile") == 1
    with pytest.raises(Exception, match="compile"):
        parse_space({"study": "s", "params": {"compile": "yes"}})
    space = parse_space({"study": "s", "params": {"compile": {"choices": [False, True]}}})
    assert list(space.param("compile").choices) == [False, True]
