"""Trial checkpoints, kept per the space's ``keep`` policy so disk use stays bounded.

``keep: best`` keeps the best trial's model, ``keep: top_k`` the ``keep_top_k`` best (ranked by
the first objective, as ``export`` picks its trial; ties go to the earlier trial), ``keep: none``
keeps nothing (``export`` then re-trains). A checkpoint is a model core (:mod:`search.bundle`)
in ``ROOT/<study>/trial-<number>/``. ROOT is ``--checkpoints``, else $STRATEGY_SEARCH_CHECKPOINTS,
else ``checkpoints/`` beside a SQLite or journal file, else ``./checkpoints``; with workers on
several machines, point it at a shared directory on every machine.

Only finished trials' checkpoints are deleted, so concurrent workers never remove a checkpoint
another worker is still writing; a checkpoint that falls out of the kept set is deleted when the
next trial finishes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import optuna
from optuna.trial import TrialState

from search.bundle import CORE_FILES, Bundle, load_core, save_core
from search.space import SearchSpace

log = logging.getLogger(__name__)

CHECKPOINTS_ENV = "STRATEGY_SEARCH_CHECKPOINTS"
CHECKPOINT_ATTR = "checkpoint"


def checkpoint_root(storage_url: str | None = None, explicit: str | Path | None = None) -> Path:
    """Where checkpoints live for a storage (see the module docstring)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CHECKPOINTS_ENV):
        return Path(os.environ[CHECKPOINTS_ENV]).expanduser()
    from search.study.storage import JOURNAL_PREFIX, _sqlite_path, resolve_url

    url = resolve_url(storage_url)
    db: str | None = None
    if url.startswith(JOURNAL_PREFIX):
        db = url[len(JOURNAL_PREFIX):].removeprefix("//")
    elif url.startswith("sqlite"):
        db = _sqlite_path(url)
    return (Path(db).expanduser().parent if db else Path.cwd()) / "checkpoints"


def _dirname(study: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study)
    if safe != study:  # keep distinct names distinct after sanitising
        safe += "-" + hashlib.sha1(study.encode()).hexdigest()[:8]
    return safe


class CheckpointStore:
    """Checkpoints of trials, one directory per study."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, study: str, number: int) -> Path:
        return self.root / _dirname(study) / f"trial-{number}"

    def has(self, study: str, number: int) -> bool:
        return all((self.path(study, number) / name).is_file() for name in CORE_FILES)

    def numbers(self, study: str) -> list[int]:
        folder = self.root / _dirname(study)
        if not folder.is_dir():
            return []
        found = (re.fullmatch(r"trial-(\d+)", p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, study: str, number: int, bundle: Bundle) -> Path:
        """Write atomically: a reader never sees half a checkpoint."""
        final = self.path(study, number)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save_core(bundle, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def load(self, study: str, number: int) -> Bundle:
        return load_core(self.path(study, number))

    def remove(self, study: str, number: int) -> None:
        shutil.rmtree(self.path(study, number), ignore_errors=True)


def kept_numbers(space: SearchSpace, entries: Iterable[tuple[int, Sequence[float]]]) -> set[int]:
    """Trial numbers whose checkpoints the policy keeps, from (number, values) of finished trials."""
    if space.keep == "none":
        return set()
    k = 1 if space.keep == "best" else space.keep_top_k
    sign = 1.0 if space.objectives[0].direction == "maximize" else -1.0
    valid = [(n, v[0]) for n, v in entries if v and all(math.isfinite(x) for x in v)]
    ranked = sorted(valid, key=lambda e: (-sign * e[1], e[0]))
    return {n for n, _ in ranked[:k]}


def keep_checkpoint(store: CheckpointStore, space: SearchSpace, trial: optuna.Trial,
                    values: Sequence[float], make_bundle: Callable[[], Bundle]) -> Path | None:
    """Save this (still running) trial's model if the policy keeps it; drop those it displaces."""
    study = trial.study
    name = study.study_name
    trials = study.get_trials(deepcopy=False)
    complete = [(t.number, t.values) for t in trials if t.state == TrialState.COMPLETE and t.values]
    kept = kept_numbers(space, [*complete, (trial.number, list(values))])
    path = None
    if trial.number in kept:
        path = store.save(name, trial.number, make_bundle())
        trial.set_user_attr(CHECKPOINT_ATTR, str(path.relative_to(store.root)))
        log.debug("trial %d: checkpoint %s", trial.number, path)
    finished = {t.number for t in trials if t.state.is_finished()}
    for number in store.numbers(name):
        if number in finished and number not in kept:
            store.remove(name, number)
            log.debug("removed checkpoint of trial %d (no longer kept by keep: %s)", number, space.keep)
    return path
