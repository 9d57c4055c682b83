"""Heartbeats of running trials, and failing (then retrying) the trials of workers that died.

On an RDB storage a worker records Optuna's heartbeat directly. Through a storage proxy
(``grpc://``), which has no heartbeat API, the worker writes a trial system attr instead and the
proxy records it as the database heartbeat and runs the stale check itself
(:mod:`search.storage.proxy`). A trial without a heartbeat for the grace period is failed with
``fail_reason`` "worker lost: ..." and queued again once with the same params.

Failing a trial and queueing its retry is one step (:func:`fail_and_retry`: one transaction on an
RDB storage, one call through the proxy): nobody ever sees the trial failed while its retry is
not queued yet, which a worker waiting for that trial would take for "budget used up, nothing
running" and leave, stranding the retry.

The functions take the study's storage resolved once (:class:`~search.storage.resolved.StudyStorage`:
its heartbeat interval, grace period and kind), not the study.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search import records
from search.storage import internals
from search.storage.owned import OwnedTrialsStorage
from search.storage.resolved import StudyStorage

log = logging.getLogger(__name__)

BEAT_ATTR = records.HEARTBEAT
# Through a storage proxy, a trial system attr of this key asks the proxy to fail the trial and
# queue its retry in one transaction (value: {"reason": str | None, "retry": bool}); never stored.
FAIL_ATTR = records.FAIL_AND_RETRY
LOST_PREFIX = "worker lost"
MAX_RETRY = 1


def beat(where: StudyStorage, trial_id: int) -> None:
    """Record one heartbeat of a running trial."""
    if where.proxied:
        where.front.set_trial_system_attr(trial_id, BEAT_ATTR, time.time())
    else:
        where.front.record_heartbeat(trial_id)  # type: ignore[attr-defined]


def lost_reason(grace: int) -> str:
    return f"{LOST_PREFIX}: no heartbeat for {grace} s"


def is_lost(frozen: FrozenTrial) -> bool:
    """A FAIL trial that was failed for missed heartbeats (not by its own worker)."""
    return str(records.fail_reason(frozen, LOST_PREFIX)).startswith(LOST_PREFIX)


def fail_stale(where: StudyStorage) -> int:
    """Fail the trials of the study whose worker stopped beating, with the reason; queue each once again."""
    grace = int(where.grace or 0)  # set wherever trials have heartbeats (none: nothing is stale)
    failed = 0
    for trial_id in internals.stale_trial_ids(where.front, where.study):
        frozen = where.front.get_trial(trial_id)
        retry = len(records.retry_history(frozen)) < MAX_RETRY
        if not fail_and_retry(where, frozen, lost_reason(grace), retry=retry):
            continue  # another worker failed it first, or its own worker just finished it
        failed += 1
        log.warning("trial %d failed: %s", frozen.number, lost_reason(grace))
        if retry:
            log.info("trial %d queued again with the same params", frozen.number)
    return failed


def fail_and_retry(where: StudyStorage, trial: FrozenTrial, reason: str | None, *, retry: bool = True) -> bool:
    """Set the RUNNING ``trial`` FAIL with user attr ``fail_reason`` = ``reason`` (None: leave it as is)
    and, with ``retry``, queue it again with the same params, in one step; False (nothing changed)
    when the trial is no longer running.

    One transaction on our RDB storages, one call that the storage proxy carries out so (see
    :meth:`~search.storage.owned.OwnedTrialsStorage.fail_running`). Other storages (in memory,
    journal: no heartbeats, one machine) take the two steps in turn.
    """
    storage = where.front
    trial_id = internals.trial_id(trial)
    attrs = {records.FAIL_REASON: reason} if reason is not None else {}
    backend = where.owned
    if backend is not None:
        if not backend.fail_running(trial_id, attrs, retry_template(trial) if retry else None):
            return False
        internals.forget_cached_trials(where.study)
        return True
    if where.proxied:
        try:
            storage.set_trial_system_attr(trial_id, FAIL_ATTR, {"reason": reason, "retry": retry})
        except UpdateFinishedTrialError:
            return False
        internals.forget_cached_trials(where.study)
        return True
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if retry:
        requeue(where.study, storage.get_trial(trial_id))
    return True


def carry_out_fail_request(backend: OwnedTrialsStorage, trial_id: int, request: dict[str, Any]) -> None:
    """The storage proxy's side of :func:`fail_and_retry` (a ``FAIL_ATTR`` write from a worker);
    raises ``UpdateFinishedTrialError`` when the trial is no longer running, as a write to it would."""
    reason = request.get("reason")
    retry = retry_template(backend.get_trial(trial_id)) if request.get("retry") else None
    if not backend.fail_running(trial_id, {records.FAIL_REASON: reason} if reason is not None else {}, retry):
        raise UpdateFinishedTrialError(f"Trial#{trial_id} has already finished and can not be updated.")


def retry_template(failed: FrozenTrial) -> FrozenTrial:
    """The WAITING retry of ``failed``: same params, marked as its retry (so it uses no budget).

    Same bookkeeping as Optuna's RetryHeartbeatStaleTrialCallback, without copying the failed
    trial's user attrs (its fail reason must not stick to the retry).
    """
    return optuna.create_trial(state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
                               system_attrs=records.retry_system_attrs(failed))


def requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Queue the finished trial ``failed`` again (:func:`retry_template`); a running one is failed
    and queued in one step by :func:`fail_and_retry` instead."""
    study.add_trial(retry_template(failed))
    log.info("trial %d queued again with the same params", failed.number)


class StaleCheck:
    """Runs :func:`fail_stale` at most once per heartbeat interval (out of the trial lock)."""

    def __init__(self, where: StudyStorage) -> None:
        self.where = where
        self.enabled = where.checks_stale
        self.every = float(where.heartbeat or 0)
        self._last = float("-inf")

    def __call__(self) -> None:
        if self.enabled and time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            fail_stale(self.where)


class HeartbeatThread:
    """Records a heartbeat for the running trial so a dead worker's trial is failed and retried.

    Beats every interval from its start; the trial's first beat is the caller's, written when the
    trial is claimed (``runner._next_trial``), so none is repeated here."""

    def __init__(self, where: StudyStorage, trial_id: int) -> None:
        self.where = where
        self.trial_id = trial_id
        self.interval = where.heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "HeartbeatThread":
        if self.interval:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                beat(self.where, self.trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the trial
                log.warning("heartbeat failed: %s", exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
