"""Export the best trial as a complete, runnable space file (every param fixed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial

from search.config import TrialConfig
from search.errors import UserError
from search.space import SearchSpace
from search.summary import best_trial


def export_config(study: optuna.Study, space: SearchSpace, trial: FrozenTrial | None = None) -> dict[str, Any]:
    """A space document that re-runs ``trial`` (default: the best) exactly: same params and seed."""
    trial = trial or best_trial(study)
    if trial is None:
        raise UserError(f"study {study.study_name!r} has no completed trial to export")
    config = trial.user_attrs.get("config")
    if config is None:
        raise UserError(f"trial {trial.number} has no stored config")
    config = TrialConfig.from_dict(config).to_dict()
    doc = copy.deepcopy(dict(space.raw))
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


def write_config(doc: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    header = "# Exported by strategy-search: run it with `strategy-search run " + out.name + "`\n"
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out
