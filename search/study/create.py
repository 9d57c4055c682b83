"""Creating a study from a space (or resuming the one with the same space and name)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from search import __version__, records
from search.core.errors import UserError
from search.core.spec import SearchSpace
from search.study import stopping
from search.storage.backend import open_storage
from search.study.warmstart import enqueue_from_space

log = logging.getLogger(__name__)


def _canonical(raw: Any) -> str:
    doc = {k: v for k, v in dict(raw).items() if k not in ("budget", "description", "enqueue", "doctor")}
    return json.dumps(doc, sort_keys=True, default=str)


def create_study(space: SearchSpace, storage: str | BaseStorage | None = None) -> optuna.Study:
    """Create the study, or load it when it exists with the same space (budget may differ)."""
    return create_or_resume(space, storage)[0]


def create_or_resume(space: SearchSpace, storage: str | BaseStorage | None = None) -> tuple[optuna.Study, bool]:
    """:func:`create_study`, and whether this call created the study (a fresh one no other process has
    joined: the only case in which ``run`` seeds its sampler with the space's ``seed`` alone).

    Creation is one unit as far as a kill can tell: the ``enqueue:`` entries are queued first and the
    space is stored last, so a study without its space is a creation that did not finish, and the
    next command finishes it (queueing only what is missing).
    """
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage)
    try:
        study = optuna.create_study(study_name=space.study, storage=store, directions=space.directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=space.study, storage=store)
        created = False
    stored = records.stored_space(study)
    if stored is None:
        enqueue_from_space(study, space)
        # Its own id: checkpoints are filed under it, so another study of the same name never shares them.
        records.init_study(study, uid=uuid.uuid4().hex, space=_json(space.raw), source=Path(space.source).name,
                           objective_names=[o.name for o in space.objectives],
                           created_with=f"strategy-search {__version__}")
        log.info("created study %r", space.study)
    else:
        if _canonical(stored) != _canonical(space.raw):
            raise UserError(
                f"study {space.study!r} already exists with a different search space; "
                "give the new space another study name (or delete the old study)"
            )
        if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
                                      else optuna.study.StudyDirection.MINIMIZE for d in space.directions]:
            raise UserError(f"study {space.study!r} exists with other objective directions")
        if stored.get("budget") != space.raw.get("budget"):
            records.set_space(study, _json(space.raw))
            stopping.reset(study)  # new stop rules (or none) are judged afresh
        log.info("resuming study %r", space.study)  # (the worker's first line counts its trials and budget)
    name_objectives(study, space)
    return study, created


def _json(raw: Any) -> Any:
    """``raw`` as plain JSON values (dates and such as strings), as a user attr must be."""
    return json.loads(json.dumps(raw, default=str))


def name_objectives(study: optuna.Study, space: SearchSpace) -> None:
    """Store the objective names (``accuracy``, ``latency_ms``) as the study's metric names, where
    it has none, so optuna-dashboard and any Optuna client show them instead of "Objective 0"."""
    names = [o.name for o in space.objectives]
    if study.metric_names is not None or len(names) != len(study.directions):
        return
    study.set_metric_names(names)  # (experimental in Optuna: search.study silences that warning)
