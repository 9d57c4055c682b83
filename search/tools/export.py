"""Export the best trial: a complete, runnable space file (every param fixed), or a production bundle."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.core.spec import SearchSpace
from search import records
from search.records import best_trial
from search.tools.summary import chosen_config

log = logging.getLogger(__name__)

SEARCH_ONLY_KEYS = ("enqueue", "doctor")  # space keys an exported config never carries


def export_config(study: optuna.Study, space: SearchSpace, trial: FrozenTrial | None = None) -> dict[str, Any]:
    """A space document that re-runs ``trial`` (default: the best) exactly: same params and seed."""
    trial, trial_config = chosen_config(study, trial, "export")
    config = trial_config.to_dict()
    doc = copy.deepcopy(dict(space.raw))
    # The search's first trials and the doctor's record belong to the search, not to this one
    # configuration: an ``enqueue:`` entry would even clash with the params fixed below.
    for key in SEARCH_ONLY_KEYS:
        doc.pop(key, None)
    doc["study"] = f"{study.study_name}-trial{trial.number}"
    doc["description"] = f"Trial {trial.number} of study {study.study_name}, exported by strategy-search."
    doc["budget"] = {"n_trials": 1, "max_epochs": int(config["epochs"])}
    doc["sampler"] = "random"
    doc["pruner"] = "none"
    doc["params"] = config
    doc["source"] = {
        "study": study.study_name,
        "trial": trial.number,
        "values": dict(zip([o.name for o in space.objectives], trial.values or [])),
        "split": "validation",
    }
    return doc


@dataclass
class ExportedBundle:
    """What ``export_bundle`` wrote and how it got the model."""

    directory: Path
    trial: int
    files: list[str]
    checks: dict[str, float]  # max |logit diff| of TorchScript/ONNX against PyTorch
    retrained: bool
    reason: str  # where the weights came from
    value_diff: float | None = None  # |retrained - recorded| first objective, when retrained
    notes: list[str] = field(default_factory=list)


def export_bundle(study: optuna.Study, space: SearchSpace, directory: str | Path, trial: FrozenTrial | None = None,
                  *, checkpoints: Any = None, device: str | None = None, weights_dir: str | None = None,
                  onnx: bool = True, force: bool = False) -> ExportedBundle:
    """Write config, weights, preprocessing, TorchScript and ONNX of ``trial`` (default: the best).

    The weights come from the trial's checkpoint (``checkpoints``: a
    :class:`~search.artifacts.checkpoints.CheckpointStore`) when it records this trial's identity (study
    uid, number, config hash); otherwise the trial is re-trained from its config, which
    reproduces it exactly on the CPU. An existing non-empty ``directory`` needs ``force``.
    """
    from search.artifacts.bundle import bundle_from_result, check_output, load_core, write_bundle
    from search.artifacts.checkpoints import checkpoint_identity, identity_mismatch, recorded_source
    from search.train.loop import resolve_device, train_space

    if trial is None and checkpoints is not None:
        trial = _best_with_checkpoint(study, checkpoints)
    doc = export_config(study, space, trial)
    trial, trial_config = chosen_config(study, trial, "export")
    out = Path(directory)
    check_output(out, force)  # before any training: a refused folder fails at once
    source = checkpoint_identity(study, trial.number, records.config_dict(trial) or {})
    value_diff = None
    mismatch = None
    if checkpoints is not None and checkpoints.has(study, trial.number):
        path = checkpoints.path(study, trial.number)
        mismatch = identity_mismatch(recorded_source(path), source)
    if checkpoints is not None and checkpoints.has(study, trial.number) and mismatch is None:
        bundle = load_core(checkpoints.path(study, trial.number))
        retrained, reason = False, f"checkpoint {checkpoints.path(study, trial.number)}"
    else:
        if mismatch is not None:
            why = f"checkpoint {checkpoints.path(study, trial.number)} is not this trial's: {mismatch}"
            log.warning("%s; re-training", why)
        elif space.keep == "none":
            why = "keep: none"
        else:
            why = f"no checkpoint of trial {trial.number} " \
                f"in {checkpoints.root if checkpoints is not None else 'the checkpoint store'}"
        config = trial_config
        dev = resolve_device(device)
        log.info("re-training trial %d from its config on %s (%s)", trial.number, dev, why)
        result = train_space(config, space, device=dev, weights_dir=weights_dir, label=f"trial {trial.number}")
        bundle = bundle_from_result(result, config, space.dataset, space.objectives, source)
        if trial.values:
            value_diff = abs(result.values[0] - trial.values[0])
        retrained, reason = True, f"re-trained on {dev} ({why})"
    bundle.meta["source"] = {**source, "values": doc["source"]["values"], "split": "validation"}
    written = write_bundle(bundle, out, doc, onnx=onnx, force=force)
    return ExportedBundle(out, trial.number, written["files"], written["checks"], retrained, reason, value_diff,
                          written["notes"])


def _best_with_checkpoint(study: optuna.Study, checkpoints: Any) -> FrozenTrial | None:
    """The best trial; among trials tied with it (every objective), the earliest that has a checkpoint."""
    best = best_trial(study)
    if best is None or checkpoints.has(study, best.number):
        return best
    tied = [t for t in records.completed(study) if t.values == best.values]
    return next((t for t in sorted(tied, key=lambda t: t.number) if checkpoints.has(study, t.number)), best)
