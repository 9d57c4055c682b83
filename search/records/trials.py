"""What a study stores, in one place: every attribute key, how it is written and read, and ranking.

Trials and studies keep our records as Optuna user attrs (JSON-able values), which any Optuna
client and optuna-dashboard show. Every other module writes and reads them through this module,
so a key is spelled once (``tests/test_records.py`` fails on an attribute key written as a string
literal anywhere else). Ranking lives here too: the best trial(s) on the first objective with the
constraints respected, the top k, and the seed-confirmed winner of ``strategy-search confirm``.

A plain module: it imports Optuna, the plain config type, ``search.space.constraints`` (feasibility
is Optuna's constraint values, read there) and the typed records of ``ablate`` and ``confirm``
(:mod:`search.records.retraining`), and nothing above them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.core.config import TrialConfig
from search.records.retraining import AblationRecord, ConfirmationRecord, RerunEntry
from search.space.constraints import all_hold, is_feasible

__all__ = [
    "CONFIG",
    "VAL",
    "TEST",
    "N_PARAMS",
    "EPOCH_SECONDS",
    "LATENCY_MS",
    "HISTORY",
    "INTERMEDIATE",
    "PRUNED_AT_EPOCH",
    "FAIL_REASON",
    "RETRY_OF",
    "CHECKPOINT",
    "ARTIFACTS",
    "REMOVED_ARTIFACT",
    "ARTIFACT_ERROR",
    "WORKER",
    "DEVICE",
    "VIOLATIONS",
    "FEASIBLE",
    "WARM_START",
    "ENQUEUED",
    "is_enqueued",
    "COMPILE_SECONDS",
    "GPU_MEMORY",
    "SPACE",
    "STUDY_UID",
    "SPACE_SOURCE",
    "OBJECTIVE_NAMES",
    "CREATED_WITH",
    "CONFIRMED",
    "ABLATION",
    "RERUNS",
    "RESTORED_EPOCH",
    "STOP_REASON",
    "WARM_STARTED_FROM",
    "RETRY_HISTORY",
    "FAILED_TRIAL",
    "HEARTBEAT",
    "NOTE_VERSION",
    "NOTE_TEXT",
    "OPTUNA_ARTIFACT",
    "FAIL_AND_RETRY",
    "NOT_COPIED",
    "Trial",
    "record_result",
    "record_architecture",
    "record_config",
    "record_history",
    "record_pruned",
    "record_intermediate",
    "record_fail_reason",
    "record_retry_of",
    "record_artifacts",
    "removed_artifact_key",
    "record_artifact_error",
    "artifacts_of",
    "removed_artifacts",
    "legacy_checkpoint",
    "without_artifacts",
    "record_worker",
    "record_device",
    "record_gpu_memory",
    "gpu_memory",
    "record_violations",
    "violation_attrs",
    "trial_config",
    "config_dict",
    "metrics",
    "history",
    "intermediate",
    "intermediate_at",
    "last_intermediate",
    "pruned_at_epoch",
    "fail_reason",
    "retry_of",
    "worker",
    "violations_of",
    "has_violations",
    "is_copied",
    "warm_start_attrs",
    "enqueued_attrs",
    "result_record",
    "retry_history",
    "retry_system_attrs",
    "failed_trial",
    "init_study",
    "set_space",
    "stored_space",
    "study_uid",
    "confirmed",
    "record_confirmed",
    "ablation",
    "record_ablation",
    "reruns",
    "record_rerun",
    "restored_epoch",
    "stop_reason",
    "record_stop_reason",
    "warm_started_from",
    "record_warm_started_from",
    "maximizes",
    "rank_key",
    "completed",
    "ranked",
    "top_k",
    "top_numbers",
    "confirmed_winner",
    "best_trials",
    "best_trial",
    "state_counts",
    "format_counts",
]

# ----------------------------------------------------------------------------- keys

# Trial user attrs.
CONFIG = "config"  # the complete TrialConfig.to_dict() the trial ran with (seed included)
VAL = "val"  # validation-split metrics (Metrics.to_dict)
TEST = "test"  # test-split metrics, when the dataset has a test split
N_PARAMS = "n_params"
EPOCH_SECONDS = "epoch_seconds"
LATENCY_MS = "latency_ms"
HISTORY = "history"  # per-epoch EpochLog.to_dict() entries
# Per-step values of every objective (and of each quality metric a constraint bounds), as columns a
# plot takes directly: {"step": [0, 1, ...], "<objective or metric name>": [value or None, ...]}.
# Step 0 holds the costs known before training (params, latency_ms); quality values start at epoch 1.
# Written each epoch, so a pruner in another worker sees a running trial's values (Optuna's own
# intermediate values take one number per step, and trial.report refuses studies with several objectives).
INTERMEDIATE = "intermediate"
PRUNED_AT_EPOCH = "pruned_at_epoch"
FAIL_REASON = "fail_reason"  # why a trial is FAIL (or PRUNED without a pruner's say)
RETRY_OF = "retry_of"  # the trial a retry replays (its worker died or it was interrupted)
CHECKPOINT = "checkpoint"  # (before artifacts) the kept model's folder, relative to the checkpoint root: read only
ARTIFACTS = "artifacts"  # the trial's files in the artifact store: {"store": URL, "files": {name: artifact id}}
ARTIFACT_ERROR = "artifact_error"  # why the trial's files could not be uploaded
WORKER = "worker"  # host:pid (and label) of the worker that ran it
DEVICE = "device"  # where the trial ran (latency is measured there)
VIOLATIONS = "constraints"  # {label: {"value", "bound", "violation"}}
FEASIBLE = "feasible"  # True / False (dashboard, report)
WARM_START = "warm_start"  # on a trial copied by --warm-start: {"study", "trial"}
ENQUEUED = "enqueued"  # on a trial enqueued from the space's ``enqueue:``: its index there
RESTORED_EPOCH = "restored_epoch"  # restore_best_epoch: the epoch whose weights were kept and scored
COMPILE_SECONDS = "compile_seconds"  # compile: true: the first step's seconds (inside epoch 1's time)
GPU_MEMORY = "gpu_memory"  # on CUDA: {"peak_mb", "total_mb"}: the trial's peak reserved memory, the card's size

# Study user attrs.
SPACE = "space"  # the space document the study was created with
STUDY_UID = "study_uid"  # the study's own id (a kept model records it; export checks it)
SPACE_SOURCE = "space_source"
OBJECTIVE_NAMES = "objective_names"
CREATED_WITH = "created_with"
CONFIRMED = "confirmed"  # written by search.tools.confirm
ABLATION = "ablation"  # written by search.tools.ablate
RERUNS = "reruns"  # ablate's and confirm's finished re-training runs, by run key (what a rerun resumes)
STOP_REASON = "stop_reason"  # written by search.study.stopping
WARM_STARTED_FROM = "warm_started_from"  # what --warm-start copied (so a resume does not copy again)

# System attrs. Optuna's own keys for a retried trial (RetryFailedTrialCallback and its twin in
# search.storage.heartbeat write the same two), and ours for storage machinery.
RETRY_HISTORY = "retry_history"
FAILED_TRIAL = "failed_trial"
HEARTBEAT = "strategy_search:heartbeat"
# optuna-dashboard's trial notes (study system attrs; see search.records.note).
NOTE_VERSION = "dashboard:{trial_id}:note_ver"
NOTE_TEXT = "dashboard:{trial_id}:note_str:{i}"
OPTUNA_ARTIFACT = "artifacts:"  # Optuna's own prefix of an artifact's meta on a trial (upload_artifact writes it)
# Study system attr per artifact the keep policy removed: REMOVED_ARTIFACT + id -> the trial's number. A
# finished trial's attrs cannot change, so removals are recorded on the study (one key each: no lost update).
REMOVED_ARTIFACT = "strategy_search:removed_artifact:"
# A request through the storage proxy, never stored: fail this trial and queue its retry in one step.
FAIL_AND_RETRY = "strategy_search:fail-and-retry"

# Keys a warm start does not copy: the constraints are judged again, the worker is another, and the
# files in the artifact store stay the source study's (a copy must never remove them).
NOT_COPIED = (VIOLATIONS, FEASIBLE, WORKER, ARTIFACTS, ARTIFACT_ERROR, CHECKPOINT)

log = logging.getLogger(__name__)

Trial = Any  # an optuna.Trial (while it runs) or a FrozenTrial: both have user_attrs and set_user_attr


# ----------------------------------------------------------------------------- trial writers


class _Metrics(Protocol):
    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]: ...


class _Result(Protocol):
    """What :func:`record_result` reads of a ``search.train.loop.TrainResult``."""

    classes: list[str]
    val: _Metrics
    test: _Metrics | None
    n_params: int
    epoch_seconds: float
    latency_ms: float
    history: Sequence[Any]
    restored_epoch: int | None
    compile_seconds: float


def record_result(trial: optuna.Trial, result: _Result) -> None:
    """Store what the business needs about a finished trial (metrics, size, speed, history)."""
    classes = result.classes
    trial.set_user_attr(VAL, result.val.to_dict(classes))
    if result.test is not None:
        trial.set_user_attr(TEST, result.test.to_dict(classes))
    trial.set_user_attr(N_PARAMS, result.n_params)
    trial.set_user_attr(EPOCH_SECONDS, round(result.epoch_seconds, 4))
    trial.set_user_attr(LATENCY_MS, round(result.latency_ms, 4))
    if result.compile_seconds:
        trial.set_user_attr(COMPILE_SECONDS, round(result.compile_seconds, 3))
    record_history(trial, [h.to_dict() for h in result.history])
    if result.restored_epoch is not None:
        trial.set_user_attr(RESTORED_EPOCH, result.restored_epoch)


def record_architecture(trial: optuna.Trial, n_params: int, latency_ms: float) -> None:
    """Size and speed of the built model, before training (:func:`record_result` writes them again)."""
    trial.set_user_attr(N_PARAMS, n_params)
    trial.set_user_attr(LATENCY_MS, round(latency_ms, 4))


def record_config(trial: optuna.Trial, config: TrialConfig) -> None:
    trial.set_user_attr(CONFIG, config.to_dict())


def record_history(trial: optuna.Trial, history: list[dict[str, float]]) -> None:
    trial.set_user_attr(HISTORY, history)


def record_pruned(trial: optuna.Trial, history: list[dict[str, float]], epoch: int) -> None:
    record_history(trial, history)
    trial.set_user_attr(PRUNED_AT_EPOCH, epoch)


def record_intermediate(trial: optuna.Trial, columns: Mapping[str, Sequence[Any]]) -> None:
    """Store the trial's per-step values (see :data:`INTERMEDIATE`), all steps so far."""
    trial.set_user_attr(INTERMEDIATE, {k: list(v) for k, v in columns.items()})


def record_fail_reason(trial: optuna.Trial, reason: str, *, keep_first: bool = False) -> None:
    """Record why a trial failed; with ``keep_first``, a reason already recorded stays."""
    if keep_first and FAIL_REASON in trial.user_attrs:
        return
    trial.set_user_attr(FAIL_REASON, reason)


def record_retry_of(trial: optuna.Trial, original: int) -> None:
    trial.set_user_attr(RETRY_OF, original)


def record_artifacts(trial: optuna.Trial, store: str, files: Mapping[str, str]) -> None:
    """The trial's files uploaded so far (written after each upload, so a killed worker's are known)."""
    trial.set_user_attr(ARTIFACTS, {"store": store, "files": dict(files)})


def removed_artifact_key(artifact_id: str) -> str:
    """The study system attr that records ``artifact_id`` as removed (its value: the trial number)."""
    return REMOVED_ARTIFACT + artifact_id


def record_artifact_error(trial: optuna.Trial, message: str) -> None:
    trial.set_user_attr(ARTIFACT_ERROR, message[:500])


def record_worker(trial: optuna.Trial, worker: str) -> None:
    trial.set_user_attr(WORKER, worker)


def record_device(trial: optuna.Trial, label: str) -> None:
    trial.set_user_attr(DEVICE, label)


def record_gpu_memory(trial: optuna.Trial, peak_bytes: int, total_bytes: int) -> None:
    """The trial's peak reserved GPU memory and the card's size (``worker --per-gpu auto`` reads it)."""
    trial.set_user_attr(GPU_MEMORY, {"peak_mb": round(peak_bytes / 2**20, 1), "total_mb": round(total_bytes / 2**20, 1)})


def record_violations(trial: optuna.Trial, found: Mapping[str, Mapping[str, Any]]) -> bool:
    """Store each bound's violation (and Optuna's constraint values, which samplers read); feasible?"""
    for key, v in found.items():
        trial.set_constraint(key, v["violation"])
    feasible = all_hold(found)
    trial.set_user_attr(VIOLATIONS, dict(found))
    trial.set_user_attr(FEASIBLE, feasible)
    return feasible


def violation_attrs(found: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The user attrs :func:`record_violations` writes, for a trial built with ``create_trial``."""
    if not found:
        return {}
    return {VIOLATIONS: dict(found), FEASIBLE: all_hold(found)}


# ----------------------------------------------------------------------------- trial readers


def trial_config(trial: Trial) -> TrialConfig | None:
    """The complete config the trial ran with (None when it stored none)."""
    stored = config_dict(trial)
    return None if stored is None else TrialConfig.from_dict(stored)


def config_dict(trial: Trial) -> dict[str, Any] | None:
    """The stored config as the JSON-able dict it was written as."""
    return trial.user_attrs.get(CONFIG)


def metrics(trial: Trial, split: str = "validation") -> dict[str, Any] | None:
    """The recorded metrics of ``split`` (``validation`` or ``test``)."""
    return trial.user_attrs.get(VAL if split == "validation" else TEST)


def history(trial: Trial) -> list[dict[str, float]]:
    return trial.user_attrs.get(HISTORY) or []


def intermediate(trial: Trial) -> dict[str, list[Any]]:
    """The trial's per-step values as columns (``{}`` when none were recorded); see :data:`INTERMEDIATE`."""
    return trial.user_attrs.get(INTERMEDIATE) or {}


def intermediate_at(columns: Mapping[str, Sequence[Any]], step: int, names: Sequence[str]) -> list[float] | None:
    """The values of ``names`` at ``step`` from :func:`intermediate`'s columns; None unless all are recorded."""
    steps = columns.get("step") or []
    if step not in steps:
        return None
    i = list(steps).index(step)
    out = []
    for name in names:
        column = columns.get(name)
        if column is None or i >= len(column) or column[i] is None:
            return None
        out.append(float(column[i]))
    return out


def last_intermediate(columns: Mapping[str, Sequence[Any]], names: Sequence[str]) -> tuple[int, list[float]] | None:
    """The last step at which every one of ``names`` was recorded, and their values there (None: no such step)."""
    for step in reversed(list(columns.get("step") or [])):
        values = intermediate_at(columns, step, names)
        if values is not None:
            return int(step), values
    return None


def pruned_at_epoch(trial: Trial) -> int | None:
    return trial.user_attrs.get(PRUNED_AT_EPOCH)


def fail_reason(trial: Trial, default: str | None = None) -> str | None:
    return trial.user_attrs.get(FAIL_REASON, default)


def retry_of(trial: Trial) -> int | None:
    return trial.user_attrs.get(RETRY_OF)


def worker(trial: Trial) -> str | None:
    return trial.user_attrs.get(WORKER)


def gpu_memory(trial: Trial) -> dict[str, float] | None:
    """``{"peak_mb", "total_mb"}`` of a trial that ran on a GPU, else None."""
    value = trial.user_attrs.get(GPU_MEMORY)
    return value if isinstance(value, dict) else None


def violations_of(trial: Trial) -> dict[str, dict[str, Any]]:
    """Each bound the trial was judged against: value, bound, violation ({} without constraints)."""
    return trial.user_attrs.get(VIOLATIONS) or {}


def artifacts_of(trial: Trial) -> tuple[str | None, dict[str, str]]:
    """The store URL and ``{file name: artifact id}`` the trial recorded (None, {} when none)."""
    doc = trial.user_attrs.get(ARTIFACTS)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("files"), Mapping):
        return None, {}
    files = {k: v for k, v in doc["files"].items() if isinstance(k, str) and isinstance(v, str)}
    store = doc.get("store")
    return (store if isinstance(store, str) else None), files


def removed_artifacts(study_system_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Artifact id -> trial number of every artifact the keep policy removed (from the study's system attrs)."""
    return {k[len(REMOVED_ARTIFACT):]: v for k, v in study_system_attrs.items() if k.startswith(REMOVED_ARTIFACT)}


def without_artifacts(system_attrs: Mapping[str, Any], ids: set[str]) -> dict[str, Any] | None:
    """A trial's system attrs less the artifact metas of ``ids`` (None: it lists none of them)."""
    hidden = {k for k in system_attrs if k.startswith(OPTUNA_ARTIFACT) and k[len(OPTUNA_ARTIFACT):] in ids}
    return {k: v for k, v in system_attrs.items() if k not in hidden} if hidden else None


def legacy_checkpoint(trial: Trial) -> str | None:
    """The checkpoint folder (relative to the old checkpoint root) a trial recorded before artifacts."""
    value = trial.user_attrs.get(CHECKPOINT)
    return value if isinstance(value, str) else None


def has_violations(trial: Trial) -> bool:
    return trial.user_attrs.get(VIOLATIONS) is not None


def is_copied(trial: Trial) -> bool:
    """Whether a warm start copied this trial in from another study."""
    return WARM_START in trial.user_attrs


def warm_start_attrs(trial: FrozenTrial, source: str) -> dict[str, Any]:
    """A copied trial's user attrs: ``trial``'s own (less those judged again here) and where it came from."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in NOT_COPIED}
    attrs[WARM_START] = {"study": source, "trial": trial.number}
    return attrs


def is_enqueued(trial: Trial) -> bool:
    """Whether ``trial`` came from the space's ``enqueue:`` list."""
    return ENQUEUED in trial.user_attrs


def enqueued_attrs(index: int) -> dict[str, Any]:
    """User attrs of a trial enqueued from entry ``index`` of the space's ``enqueue:``."""
    return {ENQUEUED: index}


def result_record(trial: Trial) -> dict[str, Any]:
    """The recorded results of a trial, by the names ``best --json`` prints."""
    attrs = trial.user_attrs
    return {
        "config": attrs.get(CONFIG),
        "validation": attrs.get(VAL),
        "test": attrs.get(TEST),
        "n_params": attrs.get(N_PARAMS),
        "epoch_seconds": attrs.get(EPOCH_SECONDS),
        "latency_ms": attrs.get(LATENCY_MS),
        "device": attrs.get(DEVICE),
        "constraints": attrs.get(VIOLATIONS),
    }


def retry_history(trial: FrozenTrial) -> list[int]:
    """The trial numbers this (retry) trial replays, oldest first."""
    return list(trial.system_attrs.get(RETRY_HISTORY, []))


def retry_system_attrs(failed: FrozenTrial) -> dict[str, Any]:
    """System attrs of the retry of ``failed``: the original trial and every failed run of it."""
    return {FAILED_TRIAL: failed.system_attrs.get(FAILED_TRIAL, failed.number),
            RETRY_HISTORY: [*retry_history(failed), failed.number]}


def failed_trial(system_attrs: Mapping[str, Any]) -> int | None:
    """The original trial a retry replays, from a trial's system attrs (None when it is no retry)."""
    return system_attrs.get(FAILED_TRIAL)


# ----------------------------------------------------------------------------- study records


def init_study(study: optuna.Study, *, uid: str, space: Any, source: str, objective_names: list[str],
               created_with: str) -> None:
    """Store what a new study is: its own id, its space document and where it came from. The space goes
    last: it marks the study as created (a kill before it leaves a study the next command finishes)."""
    study.set_user_attr(STUDY_UID, uid)
    study.set_user_attr(SPACE_SOURCE, source)
    study.set_user_attr(OBJECTIVE_NAMES, objective_names)
    study.set_user_attr(CREATED_WITH, created_with)
    set_space(study, space)


def set_space(study: optuna.Study, space: Any) -> None:
    study.set_user_attr(SPACE, space)


def stored_space(study: optuna.Study) -> Any:
    """The space document the study was created with (None: not a study of ours)."""
    return study.user_attrs.get(SPACE)


def study_uid(study: optuna.Study) -> str | None:
    """The study's own id, as stored (None for a study created before study uids existed)."""
    uid = study.user_attrs.get(STUDY_UID)
    return uid if isinstance(uid, str) else None


_R = TypeVar("_R")


def _read(from_dict: Callable[[Any], _R], stored: Any, key: str) -> _R | None:
    """A stored record read back typed; one this version cannot read is ignored, with a warning."""
    if not stored:
        return None
    try:
        return from_dict(stored)
    except (ValueError, TypeError, LookupError) as exc:
        log.warning("ignoring the study's %r record, which this version cannot read: %s", key, exc)
        return None


def confirmed(study: optuna.Study) -> ConfirmationRecord | None:
    """The record ``strategy-search confirm`` stored (rows, winner, seeds, ...), if any."""
    return _read(ConfirmationRecord.from_dict, study.user_attrs.get(CONFIRMED), CONFIRMED)


def record_confirmed(study: optuna.Study, record: ConfirmationRecord) -> None:
    study.set_user_attr(CONFIRMED, record.to_dict())


def ablation(study: optuna.Study) -> AblationRecord | None:
    """The record ``strategy-search ablate`` stored, if any."""
    return _read(AblationRecord.from_dict, study.user_attrs.get(ABLATION), ABLATION)


def record_ablation(study: optuna.Study, record: AblationRecord) -> None:
    study.set_user_attr(ABLATION, record.to_dict())


def _stored_reruns(study: optuna.Study) -> dict[str, Any]:
    found = study.user_attrs.get(RERUNS)
    return dict(found) if isinstance(found, dict) else {}


def reruns(study: optuna.Study) -> dict[str, RerunEntry]:
    """Finished re-training runs of ``ablate`` and ``confirm``, by run key (config, seed, data, device)."""
    out = {}
    for key, stored in _stored_reruns(study).items():
        entry = _read(RerunEntry.from_dict, stored, f"{RERUNS}.{key}")
        if entry is not None:
            out[key] = entry
    return out


def record_rerun(study: optuna.Study, key: str, entry: RerunEntry) -> None:
    """Add one finished run (read back first, so runs another process stored meanwhile stay)."""
    study.set_user_attr(RERUNS, {**_stored_reruns(study), key: entry.to_dict()})


def restored_epoch(trial: Trial) -> int | None:
    """The epoch whose weights a trial kept (restore_best_epoch), None when it kept its last."""
    return trial.user_attrs.get(RESTORED_EPOCH)


def stop_reason(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(STOP_REASON)


def record_stop_reason(study: optuna.Study, reason: Mapping[str, Any] | None) -> None:
    study.set_user_attr(STOP_REASON, None if reason is None else dict(reason))


def warm_started_from(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(WARM_STARTED_FROM)


def record_warm_started_from(study: optuna.Study, report: Mapping[str, Any]) -> None:
    study.set_user_attr(WARM_STARTED_FROM, dict(report))


# ----------------------------------------------------------------------------- ranking


def maximizes(study: optuna.Study) -> bool:
    """Whether the study maximizes its first objective (the one every ranking uses)."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def rank_key(maximize: bool) -> Any:
    """Sort key of a trial: better first objective first, the earlier trial on ties."""
    sign = 1.0 if maximize else -1.0
    return lambda t: (-sign * t.values[0], t.number)


def completed(study: optuna.Study, *, feasible: bool = True) -> list[FrozenTrial]:
    """The study's COMPLETE trials with values; with ``feasible``, only those meeting the constraints."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE and t.values and (not feasible or is_feasible(t))]


def ranked(trials: Iterable[FrozenTrial], maximize: bool) -> list[FrozenTrial]:
    """``trials`` best first on the first objective (ties: the earlier trial first)."""
    return sorted(trials, key=rank_key(maximize))


def top_k(study: optuna.Study, k: int, *, feasible: bool = True, with_config: bool = False) -> list[FrozenTrial]:
    """The ``k`` best completed trials on the first objective (feasible ones only by default)."""
    trials = [t for t in completed(study, feasible=feasible) if not with_config or config_dict(t) is not None]
    return ranked(trials, maximizes(study))[:k]


def top_numbers(entries: Iterable[tuple[int, Sequence[float] | None]], maximize: bool, k: int) -> set[int]:
    """The numbers of the ``k`` best of (number, values) entries; entries without finite values do not rank."""
    valid = [(n, v[0]) for n, v in entries if v and all(math.isfinite(x) for x in v)]
    sign = 1.0 if maximize else -1.0
    return {n for n, _ in sorted(valid, key=lambda e: (-sign * e[1], e[0]))[:k]}


def confirmed_winner(study: optuna.Study) -> FrozenTrial | None:
    """The winner of ``strategy-search confirm``, unless a later trial beat every confirmed candidate."""
    record = confirmed(study)
    if not record:
        return None
    complete = {t.number: t for t in study.get_trials(deepcopy=False)
                if t.state == TrialState.COMPLETE and is_feasible(t)}
    winner = complete.get(record.winner)
    if winner is None:
        return None
    sign = 1 if maximizes(study) else -1
    bar = max(sign * r.original for r in record.rows)
    if any(sign * t.values[0] > bar for n, t in complete.items() if n not in record.candidates):
        return None  # stale: a new single-run best has not been confirmed yet
    return winner


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective; the confirmed winner if any) or the Pareto front (several).

    With ``constraints:``, feasible trials only (Optuna's best_trial(s) skip infeasible ones)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and is_feasible(t)]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [confirmed_winner(study) or study.best_trial]
    return list(study.best_trials)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """One trial to ship: the confirmed winner, else the best, or on a Pareto front the one best
    on the first objective."""
    winner = confirmed_winner(study)
    if winner is not None:
        return winner
    front = best_trials(study)
    if not front:
        return None
    sign = 1 if maximizes(study) else -1
    return max(front, key=lambda t: sign * t.values[0])


# ----------------------------------------------------------------------------- counting


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """How many trials are in each state, by state name (COMPLETE, PRUNED, ...)."""
    return dict(Counter(t.state.name for t in trials))


def format_counts(counts: Iterable[tuple[str, int]]) -> str:
    """``complete 3, pruned 1`` from (state name, count) pairs, in the order given."""
    return ", ".join(f"{k.lower()} {v}" for k, v in counts)
