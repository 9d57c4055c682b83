"""Trial checkpoints, kept per the space's ``keep`` policy so disk use stays bounded.

``keep: best`` keeps the best trial's model, ``keep: top_k`` the ``keep_top_k`` best (ranked by
the first objective, as ``export`` picks its trial; ties go to the earlier trial), ``keep: none``
keeps nothing (``export`` then re-trains). A checkpoint is a model core (:mod:`search.artifacts.bundle`)
in ``ROOT/<study>.<uid>/trial-<number>/``: ``<study>`` is the name made safe as a folder name and
``<uid>`` the study's own id (user attr ``study_uid``, made when the study is created), so two
databases or a re-created study never share checkpoints. Each checkpoint's ``model.json`` records
its study uid, trial number and config hash; ``export`` re-trains when they do not match, and
only checkpoints recorded as this study's are ever replaced or deleted. ROOT is ``--checkpoints``, else $STRATEGY_SEARCH_CHECKPOINTS,
else ``checkpoints/`` beside a SQLite or journal file, else ``./checkpoints``; with workers on
several machines, point it at a shared directory on every machine.

Only finished trials' checkpoints are deleted, so concurrent workers never remove a checkpoint
another worker is still writing; a checkpoint that falls out of the kept set is deleted when the
next trial finishes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import optuna
from optuna.trial import TrialState

from search.artifacts.bundle import CORE_FILES, Bundle, save_core
from search.core.spec import SearchSpace
from search import records

log = logging.getLogger(__name__)

StudyRef = Union[optuna.Study, str]  # a study, or just a name (studies made before study uids)


def _dirname(study: str) -> str:
    """``study`` as one safe folder name: no separators, no dots (so never ``.`` or ``..``)."""
    safe = re.sub(r"[^A-Za-z0-9_+-]", "_", study)[:100] or "_"
    if safe != study:  # keep distinct names distinct after sanitising
        safe += "-" + hashlib.sha1(study.encode()).hexdigest()[:8]
    return safe


def study_uid(study: optuna.Study) -> str | None:
    """The study's own id (None for a study created before study uids existed)."""
    uid = records.study_uid(study)
    return uid if uid is not None and re.fullmatch(r"[0-9a-f]{8,64}", uid) else None


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a trial's config (as stored in its ``config`` user attr)."""
    text = json.dumps(json.loads(json.dumps(dict(config), default=str)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_identity(study: optuna.Study, number: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its trial (``source`` in its ``model.json``)."""
    return {"study": study.study_name, "study_uid": study_uid(study), "trial": number,
            "config_hash": config_hash(config)}


def identity_mismatch(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """Why a checkpoint recorded as ``recorded`` is not the trial ``expected`` (None: it is)."""
    for key in ("study_uid", "trial", "config_hash"):
        if recorded.get(key) != expected.get(key):
            return f"its {key} is {recorded.get(key)!r}, the trial's is {expected.get(key)!r}"
    return None


def recorded_source(path: Path) -> dict[str, Any]:
    """``source`` from a checkpoint's model.json ({} when unreadable)."""
    from search.artifacts.bundle import MODEL_FILE

    try:
        doc = json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    source = doc.get("source") if isinstance(doc, dict) else None
    return source if isinstance(source, dict) else {}


class CheckpointStore:
    """Checkpoints of trials, one directory per study."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def _key(study: StudyRef) -> tuple[str, str | None]:
        return (study, None) if isinstance(study, str) else (study.study_name, study_uid(study))

    def folder(self, study: StudyRef) -> Path:
        name, uid = self._key(study)
        return self.root / (f"{_dirname(name)}.{uid[:16]}" if uid else _dirname(name))

    def path(self, study: StudyRef, number: int) -> Path:
        return self.folder(study) / f"trial-{int(number)}"

    def has(self, study: StudyRef, number: int) -> bool:
        return all((self.path(study, number) / name).is_file() for name in CORE_FILES)

    def numbers(self, study: StudyRef) -> list[int]:
        folder = self.folder(study)
        if not folder.is_dir():
            return []
        found = (re.fullmatch(r"trial-(\d+)", p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def ours(self, study: StudyRef, number: int) -> bool:
        """Whether the folder of trial ``number`` holds a checkpoint this study wrote (safe to replace)."""
        name, uid = self._key(study)
        source = recorded_source(self.path(study, number))
        return source.get("study_uid") == uid and source.get("study") == name and source.get("trial") == number

    def save(self, study: StudyRef, number: int, bundle: Bundle) -> Path:
        """Write atomically: a reader never sees half a checkpoint. Never replaces a folder we did not write."""
        final = self.path(study, number)
        if final.exists() and not self.ours(study, number):
            raise OSError(f"{final} exists and was not written for this trial; left alone")
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_core(bundle, tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:  # a failed write (a full disk) leaves nothing half-written behind
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def remove(self, study: StudyRef, number: int) -> None:
        """Delete trial ``number``'s checkpoint, only if this study wrote it."""
        if self.ours(study, number):
            shutil.rmtree(self.path(study, number), ignore_errors=True)
        else:
            log.warning("not deleting %s: it is not a checkpoint of this study", self.path(study, number))


def keep_checkpoint(store: CheckpointStore, space: SearchSpace, trial: optuna.Trial,
                    values: Sequence[float], make_bundle: Callable[[], Bundle]) -> Path | None:
    """Save this (still running) trial's model if the policy keeps it; drop those it displaces."""
    study = trial.study
    trials = study.get_trials(deepcopy=False)
    kept: set[int] = set()
    if space.keep != "none":
        complete = [(t.number, t.values) for t in trials if t.state == TrialState.COMPLETE and t.values]
        kept = records.top_numbers([*complete, (trial.number, list(values))],
                                   space.objectives[0].direction == "maximize",
                                   1 if space.keep == "best" else space.keep_top_k)
    path = None
    if trial.number in kept:
        path = store.save(study, trial.number, make_bundle())
        records.record_checkpoint(trial, str(path.relative_to(store.root)))
        log.debug("trial %d: checkpoint %s", trial.number, path)
    finished = {t.number for t in trials if t.state.is_finished()}
    for number in store.numbers(study):
        if number in finished and number not in kept:
            store.remove(study, number)
            log.debug("removed checkpoint of trial %d (no longer kept by keep: %s)", number, space.keep)
    return path
