"""Export the best trial: a complete, runnable space file (every param fixed), or a production bundle."""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.core.config import TrialConfig
from search.core.spec import SearchSpace
from search import records
from search.storage import internals
from search.records import best_trial
from search.tools.summary import chosen_config

log = logging.getLogger(__name__)

SEARCH_ONLY_KEYS = ("enqueue", "doctor")  # space keys an exported config never carries


def export_config(study: optuna.Study, space: SearchSpace, trial: FrozenTrial | None = None) -> dict[str, Any]:
    """A space document that re-runs ``trial`` (default: the best) exactly: same params and seed."""
    return config_document(study, space, *chosen_config(study, trial, "export"))


def config_document(study: optuna.Study, space: SearchSpace, trial: FrozenTrial,
                    trial_config: TrialConfig) -> dict[str, Any]:
    """:func:`export_config`'s document for the chosen ``trial`` and the config it ran with."""
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
                  *, artifacts: Any = None, follow_records: bool = False, legacy_checkpoints: Path | None = None,
                  device: str | None = None, weights_dir: str | None = None, onnx: bool = True,
                  force: bool = False) -> ExportedBundle:
    """Write config, weights, preprocessing, TorchScript and ONNX of ``trial`` (default: the best).

    The weights come from the model the trial kept in the artifact store (``artifacts``: an Optuna
    artifact store, :func:`search.study.artifact_store.open_artifacts`; with ``follow_records``, the
    store the trial's worker recorded comes first) when its ``model.json`` records this trial's identity (study uid, number, config hash); else from a checkpoint a version before the
    artifact store kept under ``legacy_checkpoints``; otherwise the trial is re-trained from its
    config, which reproduces it exactly on the CPU. An existing non-empty ``directory`` needs ``force``.
    """
    from search.artifacts.bundle import bundle_from_result, check_output, write_bundle
    from search.artifacts.trial_files import TrialFiles, model_identity
    from search.train.loop import resolve_device, train_space

    files = TrialFiles(artifacts, internals.storage_of(study), internals.study_id(study),
                       follow_records=follow_records) if artifacts is not None else None
    if trial is None:
        trial = _best_with_model(study, files, legacy_checkpoints)
    # Chosen once (and its config read once): everything below gets this trial and config.
    trial, trial_config = chosen_config(study, trial, "export")
    doc = config_document(study, space, trial, trial_config)
    out = Path(directory)
    check_output(out, force)  # before any training: a refused folder fails at once
    source = model_identity(study, trial.number, records.config_dict(trial) or {})
    value_diff = None
    bundle, origin, why = _kept_model(trial, source, files, legacy_checkpoints, space)
    if bundle is not None:
        retrained, reason = False, origin
    else:
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


def _kept_model(trial: FrozenTrial, source: dict[str, Any], files: Any, legacy: Path | None,
                space: SearchSpace) -> tuple[Any, str, str]:
    """(bundle, where it came from, "") for the trial's kept model, or (None, "", why there is none).

    The artifact store first, then a checkpoint of a version before it; either is used only when
    its ``model.json`` records this trial's identity.
    """
    from search.artifacts.bundle import CORE_FILES, load_core
    from search.artifacts.store import ArtifactMissing
    from search.artifacts.trial_files import identity_mismatch, legacy_model_dir, recorded_source

    whys = []
    if files is not None and files.has_model(trial):
        with tempfile.TemporaryDirectory(prefix="strategy-search-export-") as tmp:
            folder = Path(tmp)
            try:
                files.download(trial, CORE_FILES, folder)
                mismatch = identity_mismatch(recorded_source(folder), source)
                if mismatch is None:
                    return load_core(folder), f"kept model of trial {trial.number} in {files.where(trial)}", ""
                whys.append(f"the model kept in {files.where(trial)} is not this trial's: {mismatch}")
            except ArtifactMissing as exc:  # removed meanwhile, or another store
                whys.append(str(exc))
    folder = legacy_model_dir(legacy, trial) if legacy is not None else None
    if folder is not None:
        mismatch = identity_mismatch(recorded_source(folder), source)
        if mismatch is None:
            return load_core(folder), f"checkpoint {folder} (kept before the artifact store)", ""
        whys.append(f"checkpoint {folder} is not this trial's: {mismatch}")
    if whys:
        log.warning("%s; re-training", "; ".join(whys))
        return None, "", "; ".join(whys)
    if space.keep == "none":
        return None, "", "keep: none"
    where = files.label if files is not None else "the artifact store"
    stored = files.stored_in(trial) if files is not None else None
    hint = f"; its worker uploaded to {stored}: pass --artifacts {stored}" if stored and stored != where else ""
    return None, "", f"trial {trial.number} keeps no model in {where}{hint}"


def _best_with_model(study: optuna.Study, files: Any, legacy: Path | None) -> FrozenTrial | None:
    """The best trial; among trials tied with it (every objective), the earliest that kept a model."""
    from search.artifacts.trial_files import legacy_model_dir

    def kept(t: FrozenTrial) -> bool:
        return (files is not None and files.has_model(t)) or \
            (legacy is not None and legacy_model_dir(legacy, t) is not None)

    best = best_trial(study)
    if best is None or kept(best):
        return best
    tied = [t for t in records.completed(study) if t.values == best.values]
    return next((t for t in sorted(tied, key=lambda t: t.number) if kept(t)), best)
