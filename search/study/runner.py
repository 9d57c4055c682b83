"""Create or load a study (which stores its space) and run trials in a worker loop.

``n_trials`` is the study's total budget, shared by every worker: a worker creates a trial
only while holding the study's :class:`TrialLock` and only while the study has fewer than
``n_trials`` trials that count (COMPLETE, PRUNED, RUNNING, and FAIL unless retried).

Nothing is lost when a worker dies: with heartbeats, a worker that has no budget left stays
until the other workers' running trials end, so a trial whose worker was killed is failed
(after the grace period) and its retry, with the same params, runs here. An interrupted trial
(Ctrl-C, SIGTERM) is recorded FAIL and queued again the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from search.core import progress
from search.core.numbers import duration
from search.core.spec import SearchSpace
from search.storage.budget import (NotCounted, ask, claim_counted, claim_through_proxy, counted_trials, open_trial,
                                   running_with_worker, usage, used_budget)
from search.study.objective import Objective
from search import records
from search.algorithms.pruners import create_pruner
from search.algorithms.samplers import create_sampler, grid_size, learning_from
from search.study import stopping
from search.study.packing import drain_requested
from search.study.create import name_objectives
from search.study.signals import hold_signals, redeliver
from search.storage.heartbeat import HeartbeatThread, StaleCheck, beat, fail_and_retry, is_lost
from search.storage.backend import TrialLock
from search.storage import internals
from search.storage.resolved import StudyStorage
from search.storage.retry import Outage

log = logging.getLogger(__name__)

WORKER_LABEL_ENV = "STRATEGY_SEARCH_WORKER_LABEL"
# How often a worker with no budget left looks whether the other workers' trials have ended.
IDLE_POLL = 0.5


def worker_id() -> str:
    """``host:pid`` (plus the launcher's label, e.g. ``gpu1``): stored on each trial this process runs."""
    label = os.environ.get(WORKER_LABEL_ENV)
    return f"{socket.gethostname()}:{os.getpid()}" + (f" {label}" if label else "")


@dataclass
class WorkerSummary:
    """What one worker did."""

    study: str
    counts: dict[str, int] = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    seconds: float = 0.0
    requeued: list[int] = field(default_factory=list)  # trials interrupted here and queued again

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class WorkerInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM stopped :func:`run_trials`; ``summary`` says what this worker did until then."""

    def __init__(self, summary: WorkerSummary) -> None:
        super().__init__(f"interrupted after {summary.total} trial(s)")
        self.summary = summary


DEFAULT_N_TRIALS = 20


def budget_of(space: SearchSpace, n_trials: int | None) -> int | None:
    """The study's total trial budget: given, else the grid size, else unlimited under a timeout."""
    if n_trials is not None:
        return n_trials
    if space.budget.n_trials is not None:
        return space.budget.n_trials
    if space.sampler.name == "grid":
        return grid_size(space)
    return None if space.budget.timeout is not None or space.budget.time is not None else DEFAULT_N_TRIALS


def _describe(trial: FrozenTrial, names: list[str], seconds: float) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        values = " ".join(f"{n}={v:.4f}" for n, v in zip(names, trial.values))
    elif trial.state == TrialState.PRUNED:
        last = trial.intermediate_values.get(max(trial.intermediate_values)) if trial.intermediate_values else None
        reason = records.fail_reason(trial)
        at = f"at epoch {records.pruned_at_epoch(trial)}" if reason is None else reason
        shown = f"{names[0]}={last:.4f}" if last is not None else _last_values(trial, names)
        values = f"{at}" + (f" ({shown})" if shown else "")
    else:
        values = records.fail_reason(trial, "failed")
    return f"trial {trial.number:>3} {trial.state.name:<8} {values} | {params} ({seconds:.1f}s)"


def _last_values(trial: FrozenTrial, names: list[str]) -> str:
    """``accuracy=0.6100 params=1234`` at the last step recorded per objective (several objectives)."""
    last = records.last_intermediate(records.intermediate(trial), names)
    return " ".join(f"{n}={_fmt(v)}" for n, v in zip(names, last[1])) if last else ""


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_trials(study: optuna.Study, space: SearchSpace, *, storage: StudyStorage | None = None,
               n_trials: int | None = None, timeout: float | None = None, device: str | None = None,
               weights_dir: str | None = None, worker_seed: int | None = None,
               artifacts: Any = None) -> WorkerSummary:
    """Run trials in this process until the study's budget or ``timeout`` is used up.

    ``storage``: the study's storage as the command resolved it (:meth:`StudyStorage.of`, made once
    here when not given); the budget, heartbeat, lock and keep code get this one object.
    Kept trials upload their files to ``artifacts`` (an Optuna artifact store, from
    :func:`search.study.artifact_store.open_artifacts`; None keeps nothing), see :mod:`search.artifacts.trial_files`.
    """
    where = storage if storage is not None else StudyStorage.of(study)
    if where.study is not study:
        raise ValueError("run_trials: storage was resolved for another study object")
    objective = Objective(space, device=device, weights_dir=weights_dir,
                          artifacts=None if space.keep == "none" else artifacts)
    objective.check_ready()
    name_objectives(study, space)  # a study created before metric names were stored
    study.pruner = create_pruner(space, records.is_enqueued)
    study.sampler = learning_from(create_sampler(space, worker_seed), study.pruner, internals.without_pruned)
    total = budget_of(space, n_trials)
    timeout = timeout if timeout is not None else space.budget.timeout
    time_budget = TimeBudget(space.budget.time, space.budget.max_epochs) if space.budget.time else None
    # Through a storage proxy the proxy takes the lock when it claims a trial (search.storage.proxy).
    lock = where.lock()
    heartbeat = where.heartbeat
    stale = StaleCheck(where)
    names = [o.name for o in space.objectives]
    summary = WorkerSummary(study=study.study_name)
    start = time.monotonic()
    # Optuna's trial timestamps are naive local times; some databases keep whole seconds only.
    started = datetime.datetime.now().replace(microsecond=0)
    log.info("device %s; %s%s", objective.device, budget_line(study, total),
             f"; timeout {timeout:.0f}s" if timeout else "")
    trials_bar = progress.trial_bar(total, used_budget(where), study.study_name)
    pace = Pace(study)
    trials_bar.note(pace.left(total, used_budget(where)))
    # Start-up objects (torch, the dataset, the model code) never become garbage: keep them out of
    # the collector's full passes, which otherwise stall a worker for 100+ ms every few trials.
    # Only the young generations are collected first: a full pass costs as much as the stall
    # (~150 ms of CPU per worker start) to free a few thousand objects that freezing keeps instead.
    gc.collect(1)
    gc.freeze()
    waiting = False
    try:
        while True:
            if timeout is not None and time.monotonic() - start >= timeout:
                log.info("timeout reached")
                break
            if time_budget is not None and not time_budget.fits(time.monotonic() - start):
                log.info(time_budget.why_stop(time.monotonic() - start))
                break
            stop = stopping.check(study, space)
            if stop is not None:
                log.info(stopping.format_stop(stop))
                break
            if drain_requested():
                log.info("the launcher lowered this GPU's workers (a trial ran out of memory): stopping here")
                break
            trial = _next_trial(where, total, lock, bool(heartbeat), stale, used_up=waiting)
            if trial is None:
                others = running_with_worker(where) if heartbeat else 0
                if not others:
                    # Nothing runs now, but a trial may have stopped since the claim above: failed as
                    # lost (its retry queued in the same step) or interrupted. A claim made after this
                    # look finds any such retry, so leave only if it finds nothing either.
                    trial = _next_trial(where, total, lock, bool(heartbeat), stale, used_up=waiting)
                    if trial is None:
                        break
            if trial is None:
                if not waiting:
                    log.info("budget used up; waiting for %d running trial(s) of other workers "
                             "(a trial whose worker died is retried here)", others)
                    waiting = True
                time.sleep(min(float(heartbeat), IDLE_POLL))
                continue
            waiting = False
            frozen, seconds = _run_one(where, trial, objective)
            if time_budget is not None:
                time_budget.add(seconds, len(records.history(frozen)))
            summary.counts[frozen.state.name] = summary.counts.get(frozen.state.name, 0) + 1
            log.info(_describe(frozen, names, seconds))
            pace.add(len(records.history(frozen)), seconds)
            trials_bar.update()
            if total is not None:
                trials_bar.note(pace.left(total, used_budget(where)))
    except KeyboardInterrupt:
        summary.seconds = time.monotonic() - start
        summary.requeued = _requeued_here(study, started)
        raise WorkerInterrupted(summary) from None
    finally:
        trials_bar.close()
        if lock is not None:
            lock.close()
    objective.sweep_kept_files(where)
    summary.seconds = time.monotonic() - start
    return summary


def budget_line(study: optuna.Study, total: int | None) -> str:
    """One line that agrees with itself: the trials so far by state, the budget used and left (what
    counts: a failed trial queued again does not), and what runs next."""
    trials = study.get_trials(deepcopy=False)
    used = counted_trials(list(trials))
    counts = records.format_counts(sorted(records.state_counts(trials).items()))
    so_far = f"{len(trials)} trial(s) so far ({counts})" if trials else "no trials yet"
    waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
    retried = {n for t in trials for n in records.retry_history(t)}
    uncounted = sum(1 for t in trials if t.state == TrialState.FAIL and t.number in retried)
    if total is None:
        budget = "no trial budget"
        left: int | None = None
    else:
        left = max(0, total - used)
        budget = (f"budget {total}: {used} used" + (f" (a failed trial queued again does not count: {uncounted})"
                                                     if uncounted else "") + f", {left} left")
    if left == 0:
        upcoming = "nothing left to run (--n-trials N raises the budget)"
    elif waiting:
        first = waiting[0]
        again = records.failed_trial(first.system_attrs)
        why = (f"queued again for trial {again}" if again is not None
               else "enqueued from the space's enqueue:" if records.ENQUEUED in first.user_attrs else "queued")
        upcoming = f"next: trial {first.number} ({why})"
    else:
        upcoming = "next: a new trial from the sampler"
    return f"{so_far}; {budget}; {upcoming}"


class Pace:
    """The time left, from measured epoch times: seconds per epoch and epochs per trial of the trials
    finished so far (this process's, else the study's earlier ones), times the trials left. Pruned
    trials train fewer epochs, which the mean epochs per trial takes in; the first trial alone
    (start-up, data cache) does not decide it."""

    def __init__(self, study: optuna.Study) -> None:
        self.here = [0, 0.0, 0]  # epochs, seconds, trials finished by this process
        self.earlier = [0, 0.0, 0]  # the same for the study's trials before it
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if records.history(t) and t.duration is not None:
                self._count(self.earlier, len(records.history(t)), t.duration.total_seconds())

    @staticmethod
    def _count(into: list[Any], epochs: int, seconds: float) -> None:
        if epochs:
            into[0] += epochs
            into[1] += seconds
            into[2] += 1

    def add(self, epochs: int, seconds: float) -> None:
        """A trial this process finished: ``epochs`` trained in ``seconds``."""
        self._count(self.here, epochs, seconds)

    def left(self, total: int | None, used: int) -> str:
        epochs, seconds, trials = self.here if self.here[2] else self.earlier
        if total is None or not trials:
            return ""
        left = max(0, total - used)
        per_epoch, per_trial = seconds / epochs, epochs / trials
        return (f"~{duration(left * per_trial * per_epoch)} left ({left} trials x {per_trial:.1f} epochs x "
                f"{per_epoch:.2g} s)")


class TimeBudget:
    """``budget.time``: the search in this run ends within it. A trial starts only when a full trial
    (``max_epochs`` at the median seconds per epoch of the trials run here so far) still fits."""

    def __init__(self, seconds: float, max_epochs: int) -> None:
        self.seconds = seconds
        self.max_epochs = max_epochs
        self.per_epoch: list[float] = []

    def add(self, seconds: float, epochs: int) -> None:
        if epochs > 0:
            self.per_epoch.append(seconds / epochs)

    def next_trial(self) -> float:
        if not self.per_epoch:
            return 0.0  # nothing measured yet: the first trial measures it
        ordered = sorted(self.per_epoch)
        return ordered[len(ordered) // 2] * self.max_epochs

    def fits(self, elapsed: float) -> bool:
        return elapsed + self.next_trial() <= self.seconds

    def why_stop(self, elapsed: float) -> str:
        return (f"time budget: {elapsed:.0f}s of {self.seconds:.0f}s used; a full trial takes about "
                f"{self.next_trial():.0f}s, which does not fit in what is left")


def _requeued_here(study: optuna.Study, since: datetime.datetime) -> list[int]:
    """Trials this process started after ``since`` that were interrupted and queued again."""
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001 - the interrupt is reported either way
        log.debug("could not read the interrupted trials back: %s", exc)
        return []
    retried = {n for t in trials for n in records.retry_history(t)}
    me = worker_id()
    return [t.number for t in trials if t.number in retried and records.worker(t) == me
            and records.fail_reason(t) == "interrupted"
            and t.datetime_start is not None and t.datetime_start >= since]


def _next_trial(where: StudyStorage, total: int | None, lock: TrialLock | None, heartbeat: bool,
                stale: StaleCheck | None = None, used_up: bool = False) -> optuna.Trial | None:
    # Out of the lock and at most once per heartbeat interval: failing a stale trial and queueing
    # its retry only lowers the used budget, so it needs no lock.
    if stale is not None:
        stale()

    held: list[int] = []
    proxied = where.proxied
    with contextlib.ExitStack() as signals:
        if proxied:
            # One call: the proxy counts, claims and records the first heartbeat under the study's
            # lock, so a worker interrupted from here on leaves a trial that goes stale and is retried.
            asked: optuna.Trial | int | None = claim_through_proxy(where, total)
            if asked is None:
                return None
        else:
            # A worker that found the budget used up looks without the lock: it stays used up until a
            # stale trial is failed (the next look sees that), and waiting workers must not queue on it.
            if used_up and total is not None and used_budget(where) >= total:
                return None
            # Only "count the budget, then claim or create a trial" needs the study's lock; reading
            # the trial back, its first heartbeat and its worker attr come after it is released.
            key = lock.advisory_key if lock is not None else None
            counted = key is not None and where.counts_in_transaction
            holding = counted
            if counted:
                # PostgreSQL: the count and the new trial in one transaction that takes the lock.
                held = signals.enter_context(hold_signals())
                try:
                    asked = claim_counted(where, total, key)
                except NotCounted:  # queued trials: one is taken under the lock
                    counted = False
            if not counted:
                with lock.hold() if lock is not None else contextlib.nullcontext():
                    used, queued = usage(where)
                    if total is not None and used >= total:
                        asked = None
                    else:
                        if not holding:
                            held = signals.enter_context(hold_signals())
                        asked = ask(where, queued)
            if asked is None:
                if held:
                    signals.close()
                    redeliver(held[0])
                return None
        trial = _start(where, asked, heartbeat and not proxied)
    if held:
        _interrupted(where, trial)
        redeliver(held[0])
    return trial


def _start(where: StudyStorage, asked: optuna.Trial | int, beats: bool) -> optuna.Trial:
    """Record a new trial's first heartbeat and its worker, and open it."""
    backend = where.owned
    if isinstance(asked, int) and backend is not None and backend.owns(asked):
        # Created here: no lookups before the writes (one statement each on PostgreSQL), and opening
        # it reads the local copy.
        backend.start_trial(asked, {records.WORKER: worker_id()}, heartbeat=beats)
        return open_trial(where, asked)
    trial = open_trial(where, asked)
    if beats:
        # Beat before anything else: a RUNNING trial without a heartbeat is never failed as stale.
        beat(where, internals.trial_id(trial))
    records.record_worker(trial, worker_id())
    return trial


def _run_one(where: StudyStorage, trial: optuna.Trial, objective: Objective) -> tuple[FrozenTrial, float]:
    start = time.monotonic()
    with HeartbeatThread(where, internals.trial_id(trial)):
        try:
            outcome, reason = _evaluate(objective, trial)
            with hold_signals() as held:  # a finished trial is recorded whole, even if Ctrl-C comes now
                if reason is not None:
                    _set_reason(trial, reason)
                frozen = _tell(where.study, trial, **outcome)
        except KeyboardInterrupt:
            _interrupted(where, trial)
            raise
    if held:
        redeliver(held[0])
    _write_note(where, frozen, [o.name for o in objective.space.objectives])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return frozen, time.monotonic() - start


def _write_note(where: StudyStorage, frozen: FrozenTrial, names: list[str]) -> None:
    """The finished trial's note for optuna-dashboard's trial page (search.records.note); a note that
    cannot be written costs a warning, never the trial."""
    from search.records.note import note_keys, trial_note

    try:
        for key, value in note_keys(internals.trial_id(frozen), trial_note(frozen, names)).items():
            where.front.set_study_system_attr(where.study_id, key, value)
    except Exception as exc:  # noqa: BLE001 - the trial is recorded already; its note is a nicety
        log.warning("trial %d: could not write its dashboard note: %s", frozen.number, exc)


def _evaluate(objective: Objective, trial: optuna.Trial) -> tuple[dict[str, Any], str | None]:
    """Run the objective: what to tell the study, and why the trial failed (None if it did not)."""
    try:
        values = objective(trial)
    except optuna.TrialPruned:
        return {"state": TrialState.PRUNED}, None
    except Outage:
        raise  # the database stayed away past --connect-timeout: not the trial's fault; it goes stale
    except Exception as exc:  # noqa: BLE001 - a crashing trial is recorded, the worker goes on
        log.debug("trial %d raised", trial.number, exc_info=True)
        return {"state": TrialState.FAIL}, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    listed = values if isinstance(values, (list, tuple)) else [values]
    if not all(math.isfinite(v) for v in listed):
        # Optuna records NaN as FAIL but +-inf as COMPLETE; neither is a result to rank.
        return {"state": TrialState.FAIL}, f"non-finite objective {values}"
    return {"values": values}, None


def _interrupted(where: StudyStorage, trial: optuna.Trial) -> None:
    """Record an interrupted trial FAIL and queue it again, in one step (unless it was already finished)."""
    if where.front.get_trial(internals.trial_id(trial)).state.is_finished():
        return
    _set_reason(trial, "interrupted")  # unless the objective gave a reason first
    # Read back after the reason: its params and retry history make the retry.
    fail_and_retry(where, where.front.get_trial(internals.trial_id(trial)), None, retry=True)


def _set_reason(trial: optuna.Trial, reason: str) -> None:
    """Record why a trial failed, unless the objective already said (or the trial is finished)."""
    try:
        records.record_fail_reason(trial, reason, keep_first=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _tell(study: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> FrozenTrial:
    """``study.tell``; a trial another worker already failed as stale (missed heartbeats) stays so."""
    # (A grid study ends by its budget: search.algorithms.samplers. grid sampler never calls study.stop().)
    try:
        frozen = study.tell(trial, skip_if_finished=True, **kwargs)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Failed as stale by another worker since this process last wrote to it (its local copy,
        # search.storage.owned, still said RUNNING): the copy is gone now, so this reads the stored trial.
        frozen = study.tell(trial, skip_if_finished=True, **kwargs)
    if frozen.state == TrialState.FAIL and kwargs.get("state") != TrialState.FAIL and is_lost(frozen):
        log.warning("trial %d was failed by another worker after missed heartbeats; its retry runs there",
                    trial.number)
    return frozen


def worker_seed_for(space: SearchSpace, n_trials: int = 0) -> int:
    """A sampler seed of its own for each worker process and each point of the study (``n_trials``: the
    trials already in it), so neither parallel workers nor a process that resumes the study draw
    from the sampler state an earlier one drew from (which repeated its trials' params)."""
    return (space.seed * 1_000_003 + n_trials * 7_919 + os.getpid()) % (2**31 - 1)
