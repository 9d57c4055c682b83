"""A trial's files in Optuna's artifact store: what a kept trial uploads, the keep policy, reading them back.

A trial the space's ``keep:`` keeps (``best``: the best trial, ``top_k``: the ``keep_top_k`` best,
ranked by the first objective with ties to the earlier trial, ``none``: nothing) uploads, through
:func:`optuna.artifacts.upload_artifact`, while it is still running:

* its model core (:mod:`search.artifacts.bundle`): ``model.safetensors``, ``model.json`` (which
  records the trial's identity: study name, study uid, trial number, config hash),
  ``preprocessing.json``: what ``export`` turns into a bundle without re-training;
* ``learning_curve.png`` and ``confusion_matrix.png``, which optuna-dashboard shows on the trial's page;
* ``metrics.json``: validation and test metrics with per-class precision, recall, F1 and the
  confusion matrices.

Optuna records each artifact on the trial (system attr ``artifacts:<id>``); the trial's user attr
``artifacts`` (:func:`search.records.record_artifacts`) names the store and the files, and is
written after each upload, so a worker killed mid-upload leaves a record of what it uploaded.

When a kept trial falls out of the kept set, the next trial to finish removes its files, and each
worker sweeps once more when it leaves (so a study ends keeping exactly its best / top k, also when
trials finished at the same time on several workers). Only finished trials' files are removed (a
worker never touches files another worker is still uploading), and only files both recorded by the
trial and listed by Optuna as that trial's artifacts (a record copied or forged from elsewhere
removes nothing). A finished trial's attrs can no longer change, so each removal is recorded on the
study (system attr ``strategy_search:removed_artifact:<id>``); readers subtract those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
from optuna.artifacts import download_artifact, get_all_artifact_meta, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from search import records
from search.artifacts import figures
from search.artifacts.bundle import CORE_FILES, MODEL_FILE, WEIGHTS_FILE, Bundle, save_core
from search.artifacts.store import ArtifactMissing, ArtifactStoreError, is_not_found, label
from search.core.spec import SearchSpace

log = logging.getLogger(__name__)

LEARNING_CURVE_FILE = "learning_curve.png"
CONFUSION_FILE = "confusion_matrix.png"
METRICS_FILE = "metrics.json"
PICTURES = (LEARNING_CURVE_FILE, CONFUSION_FILE)
# Upload order: small files first, the weights last, so a record that lists the weights lists a whole model.
UPLOAD_ORDER = (*PICTURES, METRICS_FILE, *[f for f in CORE_FILES if f != WEIGHTS_FILE], WEIGHTS_FILE)


# ----------------------------------------------------------------------------- identity


def study_uid(study: optuna.Study) -> str | None:
    """The study's own id (None for a study created before study uids existed)."""
    uid = records.study_uid(study)
    return uid if uid is not None and re.fullmatch(r"[0-9a-f]{8,64}", uid) else None


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a trial's config (as stored in its ``config`` user attr)."""
    text = json.dumps(json.loads(json.dumps(dict(config), default=str)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(study: optuna.Study, number: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a kept model records about its trial (``source`` in its ``model.json``)."""
    return {"study": study.study_name, "study_uid": study_uid(study), "trial": number,
            "config_hash": config_hash(config)}


def identity_mismatch(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """Why a model recorded as ``recorded`` is not the trial ``expected`` (None: it is)."""
    for key in ("study_uid", "trial", "config_hash"):
        if recorded.get(key) != expected.get(key):
            return f"its {key} is {recorded.get(key)!r}, the trial's is {expected.get(key)!r}"
    return None


def recorded_source(folder: Path) -> dict[str, Any]:
    """``source`` from a model core's model.json ({} when unreadable)."""
    try:
        doc = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    source = doc.get("source") if isinstance(doc, dict) else None
    return source if isinstance(source, dict) else {}


# ----------------------------------------------------------------------------- writing (workers)


def write_files(bundle: Bundle, history: Sequence[Mapping[str, Any]], folder: Path, objective: str) -> list[Path]:
    """A kept trial's files in ``folder``: model core, pictures and metrics (see the module doc)."""
    save_core(bundle, folder)
    source = bundle.meta.get("source", {})
    metrics = bundle.meta.get("metrics") or {}
    doc = {"source": source, "dataset": bundle.meta.get("dataset"), "classes": list(bundle.classes),
           "values": bundle.meta.get("values"), **{k: v for k, v in metrics.items() if v is not None}}
    (folder / METRICS_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    name = f"trial {source.get('trial', '?')}"
    if history:
        val_loss = [h["val_loss"] for h in history] if all("val_loss" in h for h in history) else None
        figures.save_png(figures.learning_curves(
            [(name, [h["epoch"] for h in history], [h["train_loss"] for h in history], [h["value"] for h in history])],
            f"validation {objective}", f"{name}: learning curve", val_loss), folder / LEARNING_CURVE_FILE)
    splits = [(split, m["n"], m["confusion"]) for split, m in metrics.items() if m and m.get("confusion")]
    if splits:
        figures.save_png(figures.confusion(bundle.classes, splits, f"{name}: confusion matrix"),
                         folder / CONFUSION_FILE)
    return [folder / n for n in UPLOAD_ORDER if (folder / n).is_file()]


def kept_numbers(space: SearchSpace, trials: Iterable[FrozenTrial],
                 running: tuple[int, Sequence[float]] | None = None) -> set[int]:
    """The trials ``keep:`` keeps (with ``running``: once that trial, (number, values), finishes)."""
    if space.keep == "none":
        return set()
    complete = [(t.number, t.values) for t in trials if t.state == TrialState.COMPLETE and t.values]
    return records.top_numbers([*complete, *([running] if running else [])],
                               space.objectives[0].direction == "maximize",
                               1 if space.keep == "best" else space.keep_top_k)


def keep_trial_files(store: Any, space: SearchSpace, trial: optuna.Trial, values: Sequence[float],
                     write: Callable[[Path], list[Path]], study_id: int) -> dict[str, str] | None:
    """Upload this (still running) trial's files if ``keep:`` keeps it; remove those it displaces.

    ``write(folder)`` writes the files into a temporary folder and returns them in upload order;
    ``study_id`` is the study's id in ``trial.storage`` (removals are recorded on the study).
    Returns ``{file name: artifact id}`` of what was uploaded (None: not kept).
    """
    trials = trial.study.get_trials(deepcopy=False)
    kept = kept_numbers(space, trials, (trial.number, list(values)))
    uploaded = upload_files(store, trial, write) if trial.number in kept else None
    sweep(store, trial.storage, study_id, trials, kept)
    return uploaded


def upload_files(store: Any, trial: optuna.Trial, write: Callable[[Path], list[Path]]) -> dict[str, str]:
    """Upload what ``write`` produces as the trial's artifacts; record them after each upload."""
    done: dict[str, str] = {}
    where = label(store)
    with tempfile.TemporaryDirectory(prefix="strategy-search-trial-") as tmp:
        for path in write(Path(tmp)):
            done[path.name] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            records.record_artifacts(trial, where, done)
    log.debug("trial %d: uploaded %s to %s", trial.number, ", ".join(done), where)
    return done


def sweep(store: Any, storage: Any, study_id: int, trials: Sequence[FrozenTrial], kept: set[int]) -> dict[int, list[str]]:
    """Remove the files of finished trials that ``keep:`` does not keep; record each removal on the study."""
    already = records.removed_artifacts(storage.get_study_system_attrs(study_id))
    removed: dict[int, list[str]] = {}
    for t in trials:
        if t.number in kept or not t.state.is_finished():
            continue
        _, files = records.artifacts_of(t)
        live = [i for i in files.values() if i not in already]
        if not live:
            continue
        # Only artifacts Optuna lists as this trial's: a record copied from elsewhere removes nothing.
        theirs = {m.artifact_id for m in get_all_artifact_meta(t, storage=storage)}
        gone = []
        for artifact_id in live:
            if artifact_id not in theirs:
                log.warning("trial %d records artifact %s, which is not an artifact of that trial; left alone",
                            t.number, artifact_id)
                continue
            try:
                store.remove(artifact_id)
            except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
                if not is_not_found(exc):  # already gone (another worker removed it): counts as removed
                    log.warning("trial %d: could not remove artifact %s from %s: %s", t.number, artifact_id,
                                label(store), exc)
                    continue
            storage.set_study_system_attr(study_id, records.removed_artifact_key(artifact_id), t.number)
            gone.append(artifact_id)
        if gone:
            removed[t.number] = gone
            log.debug("removed trial %d's files (no longer kept)", t.number)
    return removed


# ----------------------------------------------------------------------------- reading (any machine)


class TrialFiles:
    """The files a study's trials keep, as its trials record them (read side).

    ``storage`` is the study's storage and ``study_id`` its id there (Optuna lists a finished
    trial's artifacts through it; removals are recorded on the study). Files are read from ``store``
    when it was given explicitly (``follow_records`` False: ``--artifacts``, $STRATEGY_SEARCH_ARTIFACTS);
    otherwise from the store each trial's worker recorded (opened once), and from ``store`` (the
    space's or the default one) for trials that recorded none.
    """

    def __init__(self, store: Any, storage: Any, study_id: int, *, follow_records: bool = False) -> None:
        self.store = store
        self.storage = storage
        self.follow_records = follow_records
        self.removed = set(records.removed_artifacts(storage.get_study_system_attrs(study_id)))
        self._opened: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return label(self.store)

    def where(self, trial: FrozenTrial) -> str:
        """The URL of the store this trial's files are read from (nothing opened)."""
        recorded = self.stored_in(trial)
        return recorded if self.follow_records and recorded else self.label

    def store_of(self, trial: FrozenTrial) -> Any:
        """The store this trial's files are read from."""
        where = self.stored_in(trial)
        if not self.follow_records or where is None or where == self.label:
            return self.store
        if where not in self._opened:
            from search.artifacts.store import open_store
            from search.core.locations import parse_location

            self._opened[where] = open_store(parse_location(where, what=f"trial {trial.number}'s store"))
        return self._opened[where]

    def files(self, trial: FrozenTrial) -> dict[str, str]:
        """``{file name: artifact id}`` the trial keeps (recorded and not removed)."""
        _, files = records.artifacts_of(trial)
        return {name: i for name, i in files.items() if i not in self.removed}

    def stored_in(self, trial: FrozenTrial) -> str | None:
        """The store URL the trial's worker uploaded to."""
        return records.artifacts_of(trial)[0]

    def has_model(self, trial: FrozenTrial) -> bool:
        return all(name in self.files(trial) for name in CORE_FILES)

    def download(self, trial: FrozenTrial, names: Iterable[str], folder: Path) -> list[Path]:
        """Download the trial's files ``names`` into ``folder``; one-line :class:`ArtifactStoreError`
        (saying where the files are) when one is not in this store."""
        files = self.files(trial)
        listed = {m.artifact_id for m in get_all_artifact_meta(trial, storage=self.storage)}
        store = self.store_of(trial)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name in names:
            artifact_id = files.get(name)
            if artifact_id is None or artifact_id not in listed:
                raise ArtifactMissing(f"trial {trial.number} keeps no {name}")
            target = folder / name
            target.unlink(missing_ok=True)
            try:
                download_artifact(artifact_store=store, file_path=str(target), artifact_id=artifact_id)
            except Exception as exc:  # noqa: BLE001 - each store raises its own kinds
                target.unlink(missing_ok=True)
                kind = ArtifactMissing if is_not_found(exc) else ArtifactStoreError
                raise kind(self._missing(trial, name, label(store), exc)) from None
            out.append(target)
        return out

    def read(self, trial: FrozenTrial, name: str) -> bytes:
        """One of the trial's files, in memory (pictures and metrics are small)."""
        with tempfile.TemporaryDirectory(prefix="strategy-search-read-") as tmp:
            return self.download(trial, [name], Path(tmp))[0].read_bytes()

    def _missing(self, trial: FrozenTrial, name: str, used: str, exc: BaseException) -> str:
        where = self.stored_in(trial)
        if is_not_found(exc):
            why = f"trial {trial.number}'s {name} is not in {used}"
            if where and where != used:
                why += f" (its worker uploaded it to {where}: pass --artifacts {where})"
            return why
        return f"cannot read trial {trial.number}'s {name} from {used}: {type(exc).__name__}: " \
            f"{str(exc).splitlines()[0] if str(exc) else ''}"


def legacy_model_dir(root: Path, trial: FrozenTrial) -> Path | None:
    """A model kept by a version before the artifact store (``checkpoints/<study>.<uid>/trial-N``), if there."""
    relative = records.legacy_checkpoint(trial)
    if relative is None:
        return None
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root.resolve()):  # a forged attr never reads outside the root
        return None
    return folder if all((folder / name).is_file() for name in CORE_FILES) else None
