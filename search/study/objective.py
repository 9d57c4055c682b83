"""The Optuna objective: sample a config, train it, report per epoch, record everything."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import optuna
import torch

from search.artifacts.checkpoints import CheckpointStore, checkpoint_identity, keep_checkpoint
from search.core.config import TrialConfig
from search.space.constraints import ARCHITECTURE_METRICS, all_hold, device_label, violations
from search.data.datasets import load_dataset
from search import records
from search.models.backbones import check_weights_dir
from search.core.spec import SearchSpace
from search.train.loop import EpochLog, NonFiniteLoss, TrainResult, resolve_device, train_space
from search.train.metrics import positive_index
from search.storage import internals
from search.study.intermediate import TrialJudge

log = logging.getLogger(__name__)


def trial_seed(space: SearchSpace, config: TrialConfig, number: int) -> int:
    """A fixed ``seed`` param wins; otherwise each trial gets space seed + trial number."""
    return config.seed if config.seed is not None else space.seed + number


class Objective:
    """Callable objective for one study; ``check_ready`` validates data and weights up front."""

    def __init__(self, space: SearchSpace, device: str | torch.device | None = None,
                 weights_dir: str | Path | None = None, checkpoints: CheckpointStore | None = None) -> None:
        self.space = space
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.weights_dir = weights_dir or space.weights_dir
        self.checkpoints = checkpoints

    def check_ready(self) -> None:
        """Fail before any trial on a bad dataset or class name; warn of a missing weights_dir.

        Opens the dataset cache at every input size and aspect the space names (building what is
        missing, once per machine), so data errors show before the first trial and no trial pays
        for decoding.
        """
        default = TrialConfig()
        sizes = self._values("input_size", default.input_size)
        sizes = [s if isinstance(s, int) or s is None else None for s in sizes]
        for size in dict.fromkeys(sizes):
            for aspect in dict.fromkeys(self._values("aspect", default.aspect)):
                data = load_dataset(self.space.dataset, size, aspect)
        for spec in self.space.objectives:
            positive_index(spec, data.classes)
        # Weights are not required up front: a backbone without a local file loads through timm in
        # its trial (which fails with both ways out if that cannot work either).
        if True in self._values("pretrained", False) and set(self._values("backbone", "none")) - {"none"}:
            warning = check_weights_dir(self.weights_dir)
            if warning:
                log.warning(warning)

    def _values(self, name: str, default: Any) -> list[Any]:
        p = self.space.param(name)
        if p is None:
            return [default]
        return list(p.choices) if p.kind == "choices" else [p.value]

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        config = self.space.sample(trial)
        # A retry (of a trial whose worker died) replays the original trial, seed included.
        original = records.failed_trial(trial.storage.get_trial_system_attrs(internals.trial_id(trial)))
        config.seed = trial_seed(self.space, config, trial.number if original is None else original)
        if original is not None:
            records.record_retry_of(trial, original)
        records.record_config(trial, config)
        history: list[dict[str, float]] = []
        # Per-objective values per step, MO-ASHA and quality constraints (search.study.intermediate).
        judge = TrialJudge(self.space, trial, int(config.epochs or 1))

        def on_epoch(entry: EpochLog) -> None:
            history.append(entry.to_dict())
            if not self.space.multi_objective:
                trial.report(entry.value, entry.epoch)
            why = judge.epoch(entry)
            if why is None and not self.space.multi_objective and trial.should_prune():
                why = f"pruned at epoch {entry.epoch} ({entry.value:.4f})"
            if why is not None:
                records.record_pruned(trial, history, entry.epoch)
                raise optuna.TrialPruned(why)

        architecture = any(c.metric in ARCHITECTURE_METRICS for c in self.space.constraints)
        costs = self.space.multi_objective and any(o.metric in ARCHITECTURE_METRICS for o in self.space.objectives)
        on_model = functools.partial(self._on_model, trial, judge, architecture) if architecture or costs else None

        try:
            result = train_space(config, self.space, device=self.device, weights_dir=self.weights_dir,
                                 on_epoch=on_epoch, on_model=on_model, label=f"trial {trial.number}")
        except NonFiniteLoss as exc:
            records.record_history(trial, history)
            records.record_fail_reason(trial, f"non-finite loss: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            records.record_fail_reason(trial, f"out of GPU memory: {str(exc).splitlines()[0]}")
            raise
        records.record_result(trial, result)
        records.record_device(trial, device_label(self.device))  # latency was measured here
        found = violations(self.space.constraints, trial.user_attrs)
        if found:
            records.record_violations(trial, found)
        if self.checkpoints is not None:
            self._checkpoint(trial, config, result)
        values = result.values
        if any(not math.isfinite(v) for v in values):
            records.record_fail_reason(trial, f"non-finite objective {values}")
        return values[0] if len(values) == 1 else values

    def _on_model(self, trial: optuna.Trial, judge: TrialJudge, architecture: bool, costs: Mapping[str, float]) -> None:
        """The built model's costs, before its first step: recorded as step 0, then judged."""
        judge.costs(costs)
        if architecture:
            self._judge_architecture(trial, costs)

    def _judge_architecture(self, trial: optuna.Trial, costs: Mapping[str, float]) -> None:
        """Prune the trial before its first step when the built model's size or latency breaks a
        bound (no epoch is spent on a model that cannot ship), recording them with their constraint
        values. A trial that goes on is judged on every bound when it completes (Optuna keeps the
        first constraint value set, so none is stored early)."""
        n_params, latency = int(costs["params"]), costs["latency_ms"]
        # Judged from the costs themselves (no storage read); a trial that goes on writes nothing here.
        attrs = {records.N_PARAMS: n_params, records.LATENCY_MS: latency}
        found = violations(self.space.constraints, attrs)  # unknown metrics: violation 0
        if all_hold(found):
            return
        records.record_architecture(trial, n_params, latency)
        records.record_device(trial, device_label(self.device))
        records.record_violations(trial, found)
        broken = ", ".join(f"{k} broken ({v['value']:g})" for k, v in found.items() if v["violation"] > 0)
        reason = f"infeasible before training: {broken}"
        records.record_fail_reason(trial, reason)
        raise optuna.TrialPruned(reason)

    def _checkpoint(self, trial: optuna.Trial, config: TrialConfig, result: TrainResult) -> None:
        """Keep the model per ``keep:``; a failed write is logged and the trial still counts."""
        from search.artifacts.bundle import bundle_from_result

        # The checkpoint carries its trial's identity, so export can tell it from another study's.
        source = checkpoint_identity(trial.study, trial.number, config.to_dict())
        try:
            keep_checkpoint(self.checkpoints, self.space, trial, result.values,
                            lambda: bundle_from_result(result, config, self.space.dataset, self.space.objectives,
                                                       source))
        except OSError as exc:
            log.warning("trial %d: could not write its checkpoint: %s", trial.number, exc)
            records.record_checkpoint_error(trial, str(exc))
