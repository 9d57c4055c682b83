"""The Optuna objective: sample a config, train it, report per epoch, record everything."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import optuna
import torch

from search.core.config import TrialConfig
from search.space.constraints import ARCHITECTURE_METRICS, all_hold, device_label, violations
from search.data.datasets import load_dataset
from search import records
from search.core.spec import SearchSpace
from search.train.loop import EpochLog, NonFiniteLoss, TrainResult, resolve_device, train_space
from search.storage import internals
from search.storage.resolved import StudyStorage
from search.study.packing import read_gpu_memory
from search.study.readiness import check_data, param_values
from search.study.intermediate import TrialJudge

log = logging.getLogger(__name__)


def trial_seed(space: SearchSpace, config: TrialConfig, number: int) -> int:
    """A fixed ``seed`` param wins; otherwise each trial gets space seed + trial number."""
    return config.seed if config.seed is not None else space.seed + number


class Objective:
    """Callable objective for one study; ``check_ready`` validates data and weights up front."""

    def __init__(self, space: SearchSpace, device: str | torch.device | None = None,
                 weights_dir: str | Path | None = None, artifacts: Any = None) -> None:
        self.space = space
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.weights_dir = weights_dir or space.weights_dir
        self.artifacts = artifacts  # an Optuna artifact store (search.artifacts.store), or None: keep nothing

    def check_ready(self) -> None:
        """Fail before any trial on a bad dataset or class name; warn of a missing weights_dir.

        Opens the dataset cache at every input size and aspect the space names (building what is
        missing, once per machine), so data errors show before the first trial and no trial pays
        for decoding; then the checks ``create`` made without torch (:func:`readiness.check_data`).
        """
        default = TrialConfig()
        sizes = param_values(self.space, "input_size", default.input_size)
        sizes = [s if isinstance(s, int) or s is None else None for s in sizes]
        for size in dict.fromkeys(sizes):
            for aspect in dict.fromkeys(param_values(self.space, "aspect", default.aspect)):
                data = load_dataset(self.space.dataset, size, aspect)
        check_data(self.space, self.weights_dir, data.classes)

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

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # this trial's peak, for --per-gpu auto
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
        memory = read_gpu_memory(self.device) if self.device.type == "cuda" else None
        if memory is not None:
            records.record_gpu_memory(trial, memory.peak_bytes, memory.total_bytes)
        found = violations(self.space.constraints, trial.user_attrs)
        if found:
            records.record_violations(trial, found)
        values = result.values
        if self.artifacts is not None and all(math.isfinite(v) for v in values):
            self._keep(trial, config, result, history)
        if any(not math.isfinite(v) for v in values):
            records.record_fail_reason(trial, f"non-finite objective {values}")
        return values[0] if len(values) == 1 else values

    def sweep_kept_files(self, where: StudyStorage) -> None:
        """Remove the files of finished trials ``keep:`` no longer keeps (a worker does this as it
        leaves: trials that finished at the same time on several workers each kept their files)."""
        if self.artifacts is None:
            return
        from search.artifacts import trial_files

        try:
            trials = where.study.get_trials(deepcopy=False)
            trial_files.sweep(self.artifacts, where.front, where.study_id, trials,
                              trial_files.kept_numbers(self.space, trials))
        except Exception as exc:  # noqa: BLE001 - the next worker to finish a trial sweeps again
            log.warning("could not remove the files of trials no longer kept: %s", exc)

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

    def _keep(self, trial: optuna.Trial, config: TrialConfig, result: TrainResult,
              history: list[dict[str, float]]) -> None:
        """Upload the trial's files to the artifact store per ``keep:`` (model, pictures, metrics) and
        remove those it displaces; a failed upload is logged and recorded, and the trial still counts."""
        # Imported here: optuna.artifacts imports boto3 (0.2 s), which a worker keeping nothing never needs.
        from search.artifacts import trial_files
        from search.artifacts.bundle import bundle_from_result
        from search.artifacts.store import label

        # The model carries its trial's identity, so export can tell it from another study's.
        source = trial_files.model_identity(trial.study, trial.number, config.to_dict())

        def write(folder: Path) -> list[Path]:
            bundle = bundle_from_result(result, config, self.space.dataset, self.space.objectives, source)
            return trial_files.write_files(bundle, history, folder, self.space.objectives[0].name)

        try:
            trial_files.keep_trial_files(self.artifacts, self.space, trial, result.values, write,
                                         internals.study_id(trial.study))
        except Exception as exc:  # noqa: BLE001 - a store down or full must not lose the trial's result
            if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
                raise  # another worker failed this trial as stale: not an upload problem
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("trial %d: could not upload its files to %s: %s", trial.number, label(self.artifacts),
                        reason)
            records.record_artifact_error(trial, reason)
